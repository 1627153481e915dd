/* Episodes and recall probes: seeded determinism, sessions, T, probe validity (through the
 * canonical JSONL reader), distances, distractors, updates, interference, split disjointness
 * of templates, values and personas, the synthetic mode and the CLI. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "text/dialogue.h"
#include "text/episodes.h"
#include "text/probes.h"
#include "text/rewrite.h"
#include "text/text_util.h"

/* ------------------------------------------------------------------ helpers */

static char tmp_dir[256];

static const char *templates_dir(void) {
    static char path[4096];
    const char *fixtures = getenv("MNEMO_FIXTURES");
    snprintf(path, sizeof path, "%s/../../data/probes", fixtures ? fixtures : "tests/fixtures");
    return path;
}

static const char *tmp_path(const char *name) {
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* n dialogues of varying length, speakers named per dialogue ("X3", "Y3"), texts "d3 t5". */
static void make_dialogues(mn_dialogue_list *list, int n, int min_turns, int max_turns) {
    memset(list, 0, sizeof *list);
    for (int i = 0; i < n; i++) {
        mn_dialogue d = {0};
        char buf[64];
        snprintf(buf, sizeof buf, "dlg-%d", i);
        d.id = strdup(buf);
        d.n_turns = min_turns + (i * 7) % (max_turns - min_turns + 1);
        d.turns = calloc((size_t)d.n_turns, sizeof *d.turns);
        for (int t = 0; t < d.n_turns; t++) {
            snprintf(buf, sizeof buf, "%s%d", t % 2 ? "Y" : "X", i);
            d.turns[t].speaker = strdup(buf);
            snprintf(buf, sizeof buf, "d%d t%d", i, t);
            d.turns[t].text = strdup(buf);
            d.turns[t].date = strdup("2023-05-08");
        }
        assert_int_equal(mn_dialogue_list_push(list, &d), MN_OK);
    }
}

/* The whole list as JSONL text, to compare runs byte for byte. */
static char *serialize(const mn_dialogue_list *list) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    for (int64_t i = 0; i < list->count; i++)
        assert_int_equal(mn_jsonl_write_dialogue(f, &list->items[i]), MN_OK);
    fclose(f);
    return buf;
}

/* Writes and re-reads through the canonical reader, strictly: every line must validate. */
static void assert_roundtrip_valid(const mn_dialogue_list *list) {
    const char *path = tmp_path("roundtrip.jsonl");
    assert_int_equal(mn_jsonl_write_file(path, list), MN_OK);
    mn_dialogue_list back = {0};
    mn_read_stats stats = {0};
    mn_status st = mn_jsonl_read(path, 1, stderr, &back, &stats);
    if (st != MN_OK)
        fail_msg("re-reading probes failed: %s", mn_last_error());
    assert_int_equal(back.count, list->count);
    assert_int_equal(stats.bad_records, 0);
    for (int64_t i = 0; i < list->count; i++)
        assert_int_equal(back.items[i].n_probes, list->items[i].n_probes);
    mn_dialogue_list_free(&back);
}

static int in_list(char **list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return 1;
    return 0;
}

static int category_of_value(const mn_probe_templates *t, const char *value) {
    for (int c = 0; c < t->n_categories; c++)
        if (in_list(t->categories[c].values, t->categories[c].n_values, value))
            return c;
    return -1;
}

/* The key a question asks about, found by filling each of the given question templates. */
static const char *key_in(const mn_fact_category *cat, char **questions, int n_questions,
                          const char *question) {
    for (int q = 0; q < n_questions; q++)
        for (int k = 0; k < cat->n_keys; k++) {
            const char *tmpl = questions[q];
            const char *at = strstr(tmpl, "{key}");
            if (!at)
                continue;
            char buf[512];
            snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - tmpl), tmpl, cat->keys[k], at + 5);
            if (!strcmp(buf, question))
                return cat->keys[k];
        }
    return NULL;
}

/* The key a template question (asked by the other speaker) asks about. */
static const char *key_of_question(const mn_fact_category *cat, const char *question) {
    return key_in(cat, cat->questions, cat->n_questions, question);
}

/* s occurs in text as a whole word: "7" is not found in "71"; case counts unless ignore_case. */
static int has_word_case(const char *text, const char *s, int ignore_case) {
    size_t n = strlen(s);
    for (const char *p = text; (p = ignore_case ? strcasestr(p, s) : strstr(p, s)); p++) {
        int before = p == text || !isalnum((unsigned char)p[-1]);
        int after = !isalnum((unsigned char)p[n]);
        if (before && after)
            return 1;
    }
    return 0;
}

static int has_word(const char *text, const char *s) { return has_word_case(text, s, 0); }
static int has_word_ci(const char *text, const char *s) { return has_word_case(text, s, 1); }

static int distance_of(const mn_probe *p) { return p->after - p->evidence[0]; }

static mn_dialogue_list build_episodes(int n_dialogues, int turns, uint64_t seed) {
    mn_dialogue_list dialogues, episodes = {0};
    make_dialogues(&dialogues, n_dialogues, 6, 20);
    mn_episode_config ec = mn_episode_config_default();
    ec.turns = turns;
    ec.seed = seed;
    assert_int_equal(mn_episodes_build(&dialogues, &ec, &episodes), MN_OK);
    mn_dialogue_list_free(&dialogues);
    return episodes;
}

/* ------------------------------------------------------------------ episodes */

static void test_episodes_sessions_and_T(void **state) {
    (void)state;
    mn_dialogue_list dialogues, episodes = {0};
    make_dialogues(&dialogues, 60, 5, 20);
    int64_t total = 0;
    for (int64_t i = 0; i < dialogues.count; i++)
        total += dialogues.items[i].n_turns;
    /* a probe on dialogue 0 (after 3, evidence 1) must travel with it */
    mn_dialogue *d0 = &dialogues.items[0];
    d0->probes = calloc(1, sizeof *d0->probes);
    d0->n_probes = 1;
    d0->probes[0] = (mn_probe){.after = 3, .question = strdup("q?"), .answer = strdup("d0 t1"),
                               .evidence = malloc(sizeof(int)), .n_evidence = 1};
    d0->probes[0].evidence[0] = 1;

    mn_episode_config ec = mn_episode_config_default();
    ec.turns = 50;
    ec.seed = 7;
    assert_int_equal(mn_episodes_build(&dialogues, &ec, &episodes), MN_OK);
    assert_true(episodes.count >= 10);
    int carried = 0;
    for (int64_t e = 0; e < episodes.count; e++) {
        const mn_dialogue *ep = &episodes.items[e];
        if (e + 1 < episodes.count)
            assert_int_equal(ep->n_turns, 50);
        else
            assert_in_range(ep->n_turns, 1, 50);
        /* sessions count 1, 2, 3... and each session is the start of one source dialogue */
        int session = 0, src = -1, next_t = 0;
        const char *sp[2] = {NULL, NULL};
        for (int t = 0; t < ep->n_turns; t++) {
            const mn_turn *turn = &ep->turns[t];
            int di, ti;
            assert_int_equal(sscanf(turn->text, "d%d t%d", &di, &ti), 2);
            if (turn->session != session) {
                assert_int_equal(turn->session, session + 1);
                session = turn->session;
                src = di;
                next_t = 0;
            }
            assert_int_equal(di, src);
            assert_int_equal(ti, next_t++);
            assert_string_equal(turn->date, "2023-05-08");
            /* speakers unified: the whole episode uses its first session's two names */
            int slot = ti % 2;
            if (!sp[slot])
                sp[slot] = turn->speaker;
            assert_string_equal(turn->speaker, sp[slot]);
        }
        assert_int_equal(ep->turns[0].session, 1);
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            assert_string_equal(ep->turns[q->evidence[0]].text, "d0 t1");
            assert_string_equal(ep->turns[q->after - 1].text, "d0 t2");
            carried++;
        }
    }
    assert_int_equal(carried, 1);
    /* nothing but the cut remainders is lost: each dialogue used at most once, in full
     * except the one crossing a boundary */
    int64_t out_turns = 0;
    for (int64_t e = 0; e < episodes.count; e++)
        out_turns += episodes.items[e].n_turns;
    assert_true(out_turns <= total);
    assert_true(out_turns > total - 20 * episodes.count);

    /* drop_short: every episode has exactly T */
    mn_dialogue_list exact = {0};
    ec.drop_short = 1;
    assert_int_equal(mn_episodes_build(&dialogues, &ec, &exact), MN_OK);
    int last_short = episodes.items[episodes.count - 1].n_turns < 50;
    assert_int_equal(exact.count, episodes.count - last_short);
    for (int64_t e = 0; e < exact.count; e++)
        assert_int_equal(exact.items[e].n_turns, 50);
    /* T of thousands: one episode holds everything */
    mn_dialogue_list big = {0};
    ec.turns = 5000;
    ec.drop_short = 0;
    assert_int_equal(mn_episodes_build(&dialogues, &ec, &big), MN_OK);
    assert_int_equal(big.count, 1);
    assert_int_equal(big.items[0].n_turns, total);
    assert_int_equal(big.items[0].turns[big.items[0].n_turns - 1].session, 60);
    ec.turns = 0;
    assert_int_equal(mn_episodes_build(&dialogues, &ec, &big), MN_ERR_CONFIG);
    mn_dialogue_list_free(&big);
    mn_dialogue_list_free(&exact);
    mn_dialogue_list_free(&episodes);
    mn_dialogue_list_free(&dialogues);
}

static void test_episodes_deterministic(void **state) {
    (void)state;
    mn_dialogue_list a = build_episodes(40, 64, 3), b = build_episodes(40, 64, 3),
                     c = build_episodes(40, 64, 4);
    char *sa = serialize(&a), *sb = serialize(&b), *sc = serialize(&c);
    assert_string_equal(sa, sb);
    assert_true(strcmp(sa, sc) != 0);
    free(sa);
    free(sb);
    free(sc);
    mn_dialogue_list_free(&a);
    mn_dialogue_list_free(&b);
    mn_dialogue_list_free(&c);
}

/* ------------------------------------------------------------------ template probes */

static void test_template_probes_valid(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(120, 200, 11);
    static const mn_distance_range dist[] = {{1, 1}, {5, 5}, {17, 17}, {64, 64}, {150, 150}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 5;
    pc.probes_per_episode = 6;
    pc.sources = MN_FACTS_TEMPLATES;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_true(stats.probes > 0);
    assert_int_equal(stats.persona_probes, 0);
    int64_t seen[5] = {0}, probes = 0;
    for (int64_t e = 0; e < eps.count; e++) {
        const mn_dialogue *ep = &eps.items[e];
        assert_true(ep->n_turns <= 200); /* T still holds after injection */
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            probes++;
            assert_int_equal(q->n_evidence, 1);
            int d = distance_of(q), k = -1;
            for (int i = 0; i < 5; i++)
                if (d == dist[i].lo)
                    k = i;
            assert_true(k >= 0);
            seen[k]++;
            assert_in_range(q->after, 1, ep->n_turns);
            const mn_turn *fact = &ep->turns[q->evidence[0]];
            assert_true(has_word(fact->text, q->answer));
            /* the other speaker asks */
            assert_non_null(q->speaker);
            assert_true(strcmp(q->speaker, fact->speaker) != 0);
            /* answer + 3 distinct distractors, all of the answer's category */
            assert_int_equal(q->n_choices, 4);
            int c = category_of_value(&t, q->answer);
            assert_true(c >= 0);
            const mn_fact_category *cat = &t.categories[c];
            int has_answer = 0;
            for (int i = 0; i < q->n_choices; i++) {
                has_answer += !strcmp(q->choices[i], q->answer);
                assert_true(in_list(cat->values, cat->n_values, q->choices[i]));
                for (int j = 0; j < i; j++)
                    assert_true(strcmp(q->choices[i], q->choices[j]) != 0);
            }
            assert_int_equal(has_answer, 1);
            /* the question names the key the fact turn states */
            const char *key = key_of_question(cat, q->question);
            assert_non_null(key);
            assert_non_null(strstr(fact->text, key));
            /* fact turns keep their neighbours' session */
            if (q->evidence[0] > 0)
                assert_int_equal(fact->session, ep->turns[q->evidence[0] - 1].session);
        }
    }
    assert_int_equal(probes, stats.probes);
    for (int i = 0; i < 5; i++)
        assert_true(seen[i] > 0); /* every requested distance occurs */
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* --open-values: train values come from a large generated pool (each seen rarely), of the
 * category's kind, never a value of the valid or test split, and only for the train split. */
static void test_open_values(void **state) {
    (void)state;
    mn_probe_templates t, closed, valid, test;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &closed), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_VALID, &valid), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &test), MN_OK);
    /* held-out splits keep their lists */
    int test_values = test.categories[0].n_values;
    char *test_first = test.categories[0].values[0];
    assert_int_not_equal(mn_probe_templates_open_values(&test, templates_dir(), 1000, 1), MN_OK);
    assert_int_not_equal(mn_probe_templates_open_values(&valid, templates_dir(), 1000, 1), MN_OK);
    assert_int_equal(test.categories[0].n_values, test_values);
    assert_ptr_equal(test.categories[0].values[0], test_first);

    assert_int_equal(mn_probe_templates_open_values(&t, templates_dir(), 5000, 7), MN_OK);
    assert_int_equal(t.n_categories, closed.n_categories);
    const mn_probe_templates *heldout[2] = {&valid, &test};
    for (int c = 0; c < t.n_categories; c++) {
        const mn_fact_category *cat = &t.categories[c];
        /* a pool far larger than the closed list: every kind but dates reaches the 5000 asked */
        if (!strcmp(cat->name, "dates"))
            assert_in_range(cat->n_values, 300, 366);
        else
            assert_int_equal(cat->n_values, 5000);
        for (int v = 0; v < cat->n_values; v++) {
            const char *val = cat->values[v];
            assert_true(strlen(val) > 0 && strlen(val) < 64);
            if (!strcmp(cat->name, "numbers"))
                for (const char *p = val; *p; p++)
                    assert_true(isdigit((unsigned char)*p));
            /* no held-out value of any category, whatever the case */
            for (int h = 0; h < 2; h++)
                for (int hc = 0; hc < heldout[h]->n_categories; hc++)
                    for (int hv = 0; hv < heldout[h]->categories[hc].n_values; hv++)
                        assert_true(strcasecmp(val, heldout[h]->categories[hc].values[hv]) != 0);
        }
        /* unique within the category (spot check against the following values) */
        for (int v = 0; v + 1 < cat->n_values && v < 300; v++)
            for (int w = v + 1; w < cat->n_values; w++)
                assert_true(strcmp(cat->values[v], cat->values[w]) != 0);
    }

    /* injected probes draw their answers from the open pool: many distinct answers, almost none
     * from the closed train list, none held out */
    mn_dialogue_list eps = build_episodes(400, 30, 3);
    static const mn_distance_range dist[] = {{1, 3}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 1;
    pc.probes_per_episode = 2;
    pc.sources = MN_FACTS_TEMPLATES;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_true(stats.probes >= 200);
    char **answers = calloc((size_t)stats.probes, sizeof *answers);
    assert_non_null(answers);
    int n = 0, distinct = 0, closed_hits = 0;
    for (int64_t e = 0; e < eps.count; e++)
        for (int p = 0; p < eps.items[e].n_probes; p++) {
            const mn_probe *q = &eps.items[e].probes[p];
            assert_true(category_of_value(&t, q->answer) >= 0);
            closed_hits += category_of_value(&closed, q->answer) >= 0;
            for (int h = 0; h < 2; h++)
                assert_int_equal(category_of_value(heldout[h], q->answer), -1);
            for (int i = 0; i < q->n_choices; i++)
                for (int h = 0; h < 2; h++)
                    assert_int_equal(category_of_value(heldout[h], q->choices[i]), -1);
            distinct += !in_list(answers, n, q->answer);
            answers[n++] = q->answer;
        }
    assert_true(distinct >= n * 8 / 10);
    assert_true(closed_hits <= n / 20);
    free(answers);
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);

    /* deterministic in the seed */
    mn_probe_templates again;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_open_values(&again, templates_dir(), 5000, 7), MN_OK);
    for (int c = 0; c < t.n_categories; c++) {
        assert_int_equal(again.categories[c].n_values, t.categories[c].n_values);
        for (int v = 0; v < t.categories[c].n_values; v++)
            assert_string_equal(again.categories[c].values[v], t.categories[c].values[v]);
    }
    mn_probe_templates_free(&again);
    mn_probe_templates_free(&t);
    mn_probe_templates_free(&closed);
    mn_probe_templates_free(&valid);
    mn_probe_templates_free(&test);
}

static void test_exact_long_distance(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_VALID, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(200, 1500, 5);
    static const mn_distance_range dist[] = {{512, 512}, {1000, 1000}, {2000, 2000}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 3;
    pc.probes_per_episode = 3;
    pc.sources = MN_FACTS_TEMPLATES;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    int n512 = 0, n1000 = 0;
    for (int64_t e = 0; e < eps.count; e++)
        for (int p = 0; p < eps.items[e].n_probes; p++) {
            int d = distance_of(&eps.items[e].probes[p]);
            assert_true(d == 512 || d == 1000);
            n512 += d == 512;
            n1000 += d == 1000;
        }
    assert_int_equal(eps.count, 2); /* 1500 turns and the rest */
    assert_int_equal(n512, eps.count);
    assert_int_equal(n1000, eps.count);
    /* 2000 never fits: counted as skipped, never bent to a shorter distance */
    assert_int_equal(stats.skipped_probes, eps.count);
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

static void test_probes_deterministic(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_probe_config pc = mn_probe_config_default();
    pc.sources = MN_FACTS_TEMPLATES;
    pc.interference = 1;
    pc.update_prob = 0.5;
    char *runs[3];
    for (int r = 0; r < 3; r++) {
        mn_dialogue_list eps = build_episodes(60, 128, 9);
        pc.seed = r < 2 ? 21 : 22;
        mn_probe_stats stats = {0};
        assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
        runs[r] = serialize(&eps);
        mn_dialogue_list_free(&eps);
    }
    assert_string_equal(runs[0], runs[1]);
    assert_true(strcmp(runs[0], runs[2]) != 0);
    for (int r = 0; r < 3; r++)
        free(runs[r]);
    mn_probe_templates_free(&t);
}

static void test_updates(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(200, 160, 2);
    static const mn_distance_range dist[] = {{10, 40}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 1;
    pc.probes_per_episode = 4;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.update_prob = 1.0;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_int_equal(stats.update_probes, stats.probes);
    int checked = 0;
    for (int64_t e = 0; e < eps.count; e++) {
        const mn_dialogue *ep = &eps.items[e];
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            assert_in_range(distance_of(q), 10, 40);
            const mn_fact_category *cat = &t.categories[category_of_value(&t, q->answer)];
            const char *key = key_of_question(cat, q->question);
            assert_non_null(key);
            int f = q->evidence[0];
            /* the evidence turn is an update phrasing holding the new value */
            int is_update = 0;
            for (int u = 0; u < cat->n_updates && !is_update; u++) {
                char *filled = NULL;
                size_t len = 0;
                FILE *m = open_memstream(&filled, &len);
                for (const char *s = cat->updates[u]; *s;) {
                    if (!strncmp(s, "{key}", 5)) {
                        fputs(key, m);
                        s += 5;
                    } else if (!strncmp(s, "{value}", 7)) {
                        fputs(q->answer, m);
                        s += 7;
                    } else {
                        fputc(*s++, m);
                    }
                }
                fclose(m);
                is_update = !strcmp(filled, ep->turns[f].text);
                free(filled);
            }
            assert_true(is_update);
            /* an earlier turn of the same speaker stated another value for this key, and
             * that old value is among the distractors */
            int old_found = 0;
            for (int i = 0; i < f && !old_found; i++) {
                if (!strstr(ep->turns[i].text, key) ||
                    strcmp(ep->turns[i].speaker, ep->turns[f].speaker))
                    continue;
                for (int c = 0; c < q->n_choices; c++)
                    if (strcmp(q->choices[c], q->answer) &&
                        has_word(ep->turns[i].text, q->choices[c]))
                        old_found = 1;
            }
            assert_true(old_found);
            /* and nothing after the update changes it again before the question */
            for (int i = f + 1; i < q->after; i++)
                assert_null(strstr(ep->turns[i].text, key));
            checked++;
        }
    }
    assert_true(checked > 50);
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

static void test_interference(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(80, 200, 4);
    static const mn_distance_range dist[] = {{8, 8}, {32, 32}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 2;
    pc.probes_per_episode = 2;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.interference = 2;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_int_equal(stats.interference_facts, 2 * stats.probes);
    assert_int_equal(stats.fact_turns, 3 * stats.probes);
    for (int64_t e = 0; e < eps.count; e++) {
        const mn_dialogue *ep = &eps.items[e];
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            const mn_fact_category *cat = &t.categories[category_of_value(&t, q->answer)];
            const char *key = key_of_question(cat, q->question);
            const char *speaker = ep->turns[q->evidence[0]].speaker;
            /* two other facts of this category by the same speaker, before the question,
             * with other keys, and their values are distractors */
            int rivals = 0;
            for (int i = 0; i < q->after; i++) {
                if (i == q->evidence[0] || strcmp(ep->turns[i].speaker, speaker))
                    continue;
                for (int c = 0; c < q->n_choices; c++)
                    if (strcmp(q->choices[c], q->answer) &&
                        has_word(ep->turns[i].text, q->choices[c]) &&
                        !strstr(ep->turns[i].text, key)) {
                        int other_key = 0;
                        for (int k = 0; k < cat->n_keys; k++)
                            other_key |= strcmp(cat->keys[k], key) &&
                                         strstr(ep->turns[i].text, cat->keys[k]) != NULL;
                        rivals += other_key;
                    }
            }
            assert_true(rivals >= 2);
        }
    }
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* ------------------------------------------------------------------ splits */

static void add_all(char **list, int n, char ***all, int *count) {
    for (int i = 0; i < n; i++) {
        char *low = strdup(list[i]);
        for (char *p = low; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        *all = realloc(*all, (size_t)(*count + 1) * sizeof **all);
        (*all)[(*count)++] = low;
    }
}

/* data/probes: six families serve every split; whole families are held out for valid (4) and
 * test (6), with keys of their own; no phrasing or value is in two splits. */
static void test_template_splits_disjoint(void **state) {
    (void)state;
    mn_probe_templates s[3];
    mn_split splits[3] = {MN_SPLIT_TRAIN, MN_SPLIT_VALID, MN_SPLIT_TEST};
    const int held_out[3] = {0, 4, 6};
    char **phrases[3] = {0}, **values[3] = {0};
    int n_phr[3] = {0}, n_val[3] = {0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mn_probe_templates_load(templates_dir(), splits[i], &s[i]), MN_OK);
        assert_int_equal(s[i].n_categories, 6 + held_out[i]);
        assert_true(s[i].n_persona_questions > 0);
        assert_true(s[i].n_persona_self_questions > 0);
        add_all(s[i].persona_questions, s[i].n_persona_questions, &phrases[i], &n_phr[i]);
        add_all(s[i].persona_self_questions, s[i].n_persona_self_questions, &phrases[i],
                &n_phr[i]);
        int shared = 0, held = 0;
        for (int c = 0; c < s[i].n_categories; c++) {
            const mn_fact_category *cat = &s[i].categories[c];
            if (cat->held_out) {
                held++;
            } else {
                /* the shared families, in the same order in every split */
                assert_string_equal(cat->name, s[0].categories[shared].name);
                shared++;
            }
            assert_true(cat->n_values >= 8); /* answer + 3 distractors + interference/updates */
            assert_true(cat->n_self_questions > 0);
            add_all(cat->facts, cat->n_facts, &phrases[i], &n_phr[i]);
            add_all(cat->updates, cat->n_updates, &phrases[i], &n_phr[i]);
            add_all(cat->questions, cat->n_questions, &phrases[i], &n_phr[i]);
            add_all(cat->self_questions, cat->n_self_questions, &phrases[i], &n_phr[i]);
            add_all(cat->values, cat->n_values, &values[i], &n_val[i]);
        }
        assert_int_equal(shared, 6);
        assert_int_equal(held, held_out[i]);
    }
    /* a held-out family's keys are its own: in no other family of any split, not even as a
     * part of a longer key */
    for (int i = 1; i < 3; i++)
        for (int c = 0; c < s[i].n_categories; c++) {
            const mn_fact_category *cat = &s[i].categories[c];
            if (!cat->held_out)
                continue;
            for (int j = 0; j < 3; j++)
                for (int o = 0; o < s[j].n_categories; o++) {
                    const mn_fact_category *other = &s[j].categories[o];
                    if (!strcmp(other->name, cat->name))
                        continue;
                    for (int k = 0; k < cat->n_keys; k++)
                        for (int m = 0; m < other->n_keys; m++) {
                            assert_null(strcasestr(cat->keys[k], other->keys[m]));
                            assert_null(strcasestr(other->keys[m], cat->keys[k]));
                        }
                }
        }
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++) {
            for (int i = 0; i < n_phr[a]; i++)
                assert_false(in_list(phrases[b], n_phr[b], phrases[a][i]));
            for (int i = 0; i < n_val[a]; i++)
                assert_false(in_list(values[b], n_val[b], values[a][i]));
        }
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < n_phr[i]; j++)
            free(phrases[i][j]);
        for (int j = 0; j < n_val[i]; j++)
            free(values[i][j]);
        free(phrases[i]);
        free(values[i]);
        mn_probe_templates_free(&s[i]);
    }
}

static const char *good_category =
    "{\"category\": \"pets\", \"keys\": [\"dog's name\", \"cat's name\"],"
    " \"fact\": {\"train\": [\"My {key} is {value}.\"], \"valid\": [\"V {key} {value}\"],"
    "            \"test\": [\"T {key} {value}\"]},"
    " \"update\": {\"train\": [\"Now my {key} is {value}.\"], \"valid\": [\"VU {key} {value}\"],"
    "            \"test\": [\"TU {key} {value}\"]},"
    " \"question\": {\"train\": [\"What is your {key}?\"], \"valid\": [\"V {key}?\"],"
    "            \"test\": [\"T {key}?\"]},"
    " \"values\": {\"train\": [\"Rex\", \"Tom\"], \"valid\": [\"Ava\", \"Bo\"], \"test\": [%s]}}";

static void test_template_errors(void **state) {
    (void)state;
    mn_probe_templates t;
    char text[2048];
    /* a value shared by train and test is refused, naming the file and the value */
    snprintf(text, sizeof text, good_category, "\"Kim\", \"rex\"");
    write_text(tmp_path("leak.json"), text);
    assert_int_equal(mn_probe_templates_load(tmp_path("leak.json"), MN_SPLIT_TRAIN, &t),
                     MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "leak.json"));
    assert_non_null(strstr(mn_last_error(), "rex"));
    /* the same file with disjoint values loads */
    snprintf(text, sizeof text, good_category, "\"Kim\", \"Lou\"");
    write_text(tmp_path("ok.json"), text);
    assert_int_equal(mn_probe_templates_load(tmp_path("ok.json"), MN_SPLIT_TEST, &t), MN_OK);
    assert_int_equal(t.n_categories, 1);
    assert_string_equal(t.categories[0].values[1], "Lou");
    mn_probe_templates_free(&t);
    /* a question giving the answer away, an unknown placeholder */
    write_text(tmp_path("bad.json"),
               "{\"category\": \"x\", \"keys\": [\"k\"], \"fact\": {\"train\": [\"{key} {name}\"],"
               " \"valid\": [\"a\"], \"test\": [\"b\"]}}");
    assert_int_equal(mn_probe_templates_load(tmp_path("bad.json"), MN_SPLIT_TRAIN, &t),
                     MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "fact.train[0]"));
    assert_int_equal(mn_probe_templates_load(tmp_path("missing.json"), MN_SPLIT_TRAIN, &t),
                     MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "missing.json: cannot open: No such file"));
    assert_null(strstr(mn_last_error(), ":-1:")); /* jansson's line of an unopened file */
    mn_persona_bank bank;
    assert_int_equal(mn_persona_bank_load(tmp_path("missing.json"), MN_SPLIT_TRAIN, &bank), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "missing.json: cannot open: No such file"));
    assert_null(strstr(mn_last_error(), ":-1:"));
    write_text(tmp_path("trunc.json"), "{\"category\": \"x\", \"keys\": [");
    assert_int_equal(mn_probe_templates_load(tmp_path("trunc.json"), MN_SPLIT_TRAIN, &t),
                     MN_ERR_FORMAT);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_ALL, &t),
                     MN_ERR_INVALID_ARG);
}

static void test_distances_parse(void **state) {
    (void)state;
    mn_distance_range *r = NULL;
    int n = 0;
    assert_int_equal(mn_distances_parse("1,2,4,8,16,32,64", &r, &n), MN_OK);
    assert_int_equal(n, 7);
    assert_int_equal(r[6].lo, 64);
    assert_int_equal(r[6].hi, 64);
    free(r);
    assert_int_equal(mn_distances_parse("1-16,512,100-1000", &r, &n), MN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(r[0].lo, 1);
    assert_int_equal(r[0].hi, 16);
    assert_int_equal(r[1].lo, 512);
    assert_int_equal(r[2].hi, 1000);
    free(r);
    const char *bad[] = {"", "0", "5-2", "a", "1,,2", "1,", "3-", "-3", "1-2-3", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mn_distances_parse(bad[i], &r, &n), MN_ERR_INVALID_ARG);
}

/* ------------------------------------------------------------------ held-out families */

/* A family serving all splits, and one held out for test (its values include numbers that the
 * open-value generator of "numbers" could draw). */
static const char *numbers_family =
    "{\"category\": \"numbers\", \"keys\": [\"lucky number\", \"room number\"],"
    " \"fact\": {\"train\": [\"My {key} is {value}.\"], \"valid\": [\"V {key} {value}\"],"
    "            \"test\": [\"T {key} {value}\"]},"
    " \"update\": {\"train\": [\"Now my {key} is {value}.\"], \"valid\": [\"VU {key} {value}\"],"
    "            \"test\": [\"TU {key} {value}\"]},"
    " \"question\": {\"train\": [\"What is your {key}?\"], \"valid\": [\"V {key}?\"],"
    "            \"test\": [\"T {key}?\"]},"
    " \"values\": {\"train\": [\"1\", \"2\"], \"valid\": [\"3\", \"4\"],"
    "            \"test\": [\"5\", \"6\"]}}";

static const char *locker_family =
    "{\"category\": \"lockers\", \"family_split\": %s, \"keys\": [%s],"
    " \"fact\": {\"test\": [\"{value} opens my {key}.\"]%s},"
    " \"update\": {\"test\": [\"New code: {value} opens my {key}.\"]},"
    " \"question\": {\"test\": [\"What opens your {key}?\"]},"
    " \"self_question\": {\"test\": [\"What opens my {key}?\"]},"
    " \"values\": {\"test\": [\"7\", \"42\", %s]}}";

/* Writes a folder holding the numbers family and a locker family (fields as in locker_family,
 * under file name `locker_file`) and returns its path. */
static const char *family_dir(const char *name, const char *locker_file, const char *split,
                              const char *keys, const char *extra_fact, const char *values) {
    const char *dir = tmp_path(name);
    mkdir(dir, 0700);
    char path[1024], text[4096];
    snprintf(path, sizeof path, "%s/a_numbers.json", dir);
    write_text(path, numbers_family);
    snprintf(path, sizeof path, "%s/%s", dir, locker_file);
    snprintf(text, sizeof text, locker_family, split, keys, extra_fact, values);
    write_text(path, text);
    return dir;
}

static int category_named(const mn_probe_templates *t, const char *name) {
    for (int c = 0; c < t->n_categories; c++)
        if (!strcmp(t->categories[c].name, name))
            return c;
    return -1;
}

static void test_family_split(void **state) {
    (void)state;
    const char *dir = family_dir("fam_ok", "b_lockers.json", "\"test\"",
                                 "\"locker code\", \"bike lock code\"", "", "\"A1\"");
    mn_probe_templates t;
    /* the held-out family is absent for train and valid, present for test */
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(t.n_categories, 1);
    assert_int_equal(category_named(&t, "lockers"), -1);
    mn_probe_templates_free(&t);
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_VALID, &t), MN_OK);
    assert_int_equal(category_named(&t, "lockers"), -1);
    mn_probe_templates_free(&t);
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TEST, &t), MN_OK);
    assert_int_equal(t.n_categories, 2);
    int c = category_named(&t, "lockers");
    assert_true(c >= 0);
    assert_int_equal(t.categories[c].held_out, 1);
    assert_int_equal(t.categories[1 - c].held_out, 0);
    assert_int_equal(t.categories[c].n_values, 3);
    assert_string_equal(t.categories[c].values[2], "A1");
    assert_string_equal(t.categories[c].self_questions[0], "What opens my {key}?");
    assert_int_equal(t.categories[1 - c].n_self_questions, 0); /* optional */
    /* selections: held-out only, shared only */
    mn_probe_templates held;
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TEST, &held), MN_OK);
    assert_int_equal(mn_probe_templates_select(&held, MN_FAMILIES_HELD_OUT), MN_OK);
    assert_int_equal(held.n_categories, 1);
    assert_string_equal(held.categories[0].name, "lockers");
    mn_probe_templates_free(&held);
    assert_int_equal(mn_probe_templates_select(&t, MN_FAMILIES_SHARED), MN_OK);
    assert_int_equal(t.n_categories, 1);
    assert_string_equal(t.categories[0].name, "numbers");
    mn_probe_templates_free(&t);
    /* train has no held-out family: refused, the templates left as they were */
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(mn_probe_templates_select(&t, MN_FAMILIES_HELD_OUT), MN_ERR_CONFIG);
    assert_int_equal(t.n_categories, 1);
    mn_probe_templates_free(&t);

    /* the open values of "numbers" (0..9999, all of them when 10000 are asked) skip the held-out
     * family's values too, not only the valid/test values of the training families */
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(mn_probe_templates_open_values(&t, dir, 10000, 3), MN_OK);
    assert_int_equal(t.categories[0].n_values, 10000 - 6); /* 3, 4, 5, 6, 7 and 42 */
    assert_false(in_list(t.categories[0].values, t.categories[0].n_values, "7"));
    assert_false(in_list(t.categories[0].values, t.categories[0].n_values, "42"));
    assert_true(in_list(t.categories[0].values, t.categories[0].n_values, "43"));
    mn_probe_templates_free(&t);

    /* a held-out family's key shared with (or inside, or around) another family's key is
     * refused, naming both files, whichever file is read first */
    dir = family_dir("fam_key", "b_lockers.json", "\"test\"", "\"room number\"", "", "\"A1\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "a_numbers.json"));
    assert_non_null(strstr(mn_last_error(), "b_lockers.json"));
    assert_non_null(strstr(mn_last_error(), "room number"));
    dir = family_dir("fam_key2", "0_lockers.json", "\"test\"", "\"number\"", "", "\"A1\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TEST, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "a_numbers.json"));
    assert_non_null(strstr(mn_last_error(), "0_lockers.json"));
    /* a held-out family listing another split, a family held out of training, a held-out
     * value that training uses */
    dir = family_dir("fam_train", "b_lockers.json", "\"test\"", "\"locker code\"",
                     ", \"train\": [\"{key}: {value}\"]", "\"A1\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TEST, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "fact.train"));
    dir = family_dir("fam_split", "b_lockers.json", "\"train\"", "\"locker code\"", "", "\"A1\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TEST, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "family_split"));
    dir = family_dir("fam_value", "b_lockers.json", "\"test\"", "\"locker code\"", "", "\"2\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_VALID, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "\"2\""));
}

/* ------------------------------------------------------------------ open families */

/* The letters of s, lower-cased: coarser than the loader's comparison of phrasings (case,
 * punctuation and spacing aside), so that a frame unlike every held-out phrasing here is
 * unlike it there too. */
static void letters_of(const char *s, char *out, size_t cap) {
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && k + 1 < cap; p++)
        if (isalpha(*p))
            out[k++] = (char)tolower(*p);
    out[k] = '\0';
}

/* Words of a and b (split at spaces and hyphens) that are the same, case, a trailing "'s" and a
 * plural "s" aside. */
static int share_word(const char *a, const char *b) {
    char wa[16][64], wb[16][64];
    int na = 0, nb = 0;
    const char *src[2] = {a, b};
    char (*dst[2])[64] = {wa, wb};
    int *cnt[2] = {&na, &nb};
    for (int s = 0; s < 2; s++)
        for (const char *p = src[s]; *p && *cnt[s] < 16;) {
            p += strspn(p, " -");
            size_t n = strcspn(p, " -");
            if (!n)
                break;
            char *w = dst[s][(*cnt[s])++];
            snprintf(w, 64, "%.*s", (int)n, p);
            for (char *c = w; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            size_t len = strlen(w);
            if (len > 2 && !strcmp(w + len - 2, "'s"))
                w[len - 2] = '\0';
            else if (len > 3 && w[len - 1] == 's')
                w[len - 1] = '\0';
            p += n;
        }
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (!strcmp(wa[i], wb[j]))
                return 1;
    return 0;
}

static void free_list(char **list, int n) {
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int is_open_family(const mn_fact_category *cat) { return !strncmp(cat->name, "open-", 5); }

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every phrasing of a loaded split (persona questions included), as letters_of. */
static void add_phrasings(const mn_probe_templates *t, char ***all, int *n) {
    char buf[512];
    char **lists[6] = {t->persona_questions, t->persona_self_questions};
    int counts[6] = {t->n_persona_questions, t->n_persona_self_questions};
    for (int c = -1; c < t->n_categories; c++) {
        if (c >= 0) {
            const mn_fact_category *cat = &t->categories[c];
            char **l[4] = {cat->facts, cat->updates, cat->questions, cat->self_questions};
            int k[4] = {cat->n_facts, cat->n_updates, cat->n_questions, cat->n_self_questions};
            for (int i = 0; i < 4; i++) {
                lists[i] = l[i];
                counts[i] = k[i];
            }
        }
        for (int i = 0; i < (c < 0 ? 2 : 4); i++)
            for (int j = 0; j < counts[i]; j++) {
                letters_of(lists[i][j], buf, sizeof buf);
                *all = realloc(*all, (size_t)(*n + 1) * sizeof **all);
                (*all)[(*n)++] = strdup(buf);
            }
    }
}

/* Generated families keep clear of everything held out: no key overlapping a key of any
 * valid or test family (shared or held out), no word of a held-out family's key, no valid or
 * test value, no valid or test phrasing; keys unique across families, none holding another as
 * whole words; frames from the open frames file, values of one family never in its questions. */
static void test_open_families(void **state) {
    (void)state;
    mn_probe_templates t, valid, test;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_VALID, &valid), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &test), MN_OK);
    /* the shipped frames: train material only, as many as docs/probes.md says */
    const mn_open_frames *of = t.open_frames;
    assert_non_null(of);
    assert_null(valid.open_frames);
    assert_null(test.open_frames);
    assert_true(of->n_facts >= 40 && of->n_updates >= 15);
    assert_true(of->n_questions >= 25 && of->n_self_questions >= 25);
    assert_true(of->n_nouns + of->n_modifiers >= 150);
    /* held-out splits and folders without frames are refused, t left as it was */
    assert_int_equal(mn_probe_templates_open_families(&test, templates_dir(), 10, 1), MN_ERR_CONFIG);
    assert_int_equal(mn_probe_templates_open_families(&valid, templates_dir(), 10, 1), MN_ERR_CONFIG);
    assert_int_equal(test.n_categories, 12);
    assert_int_equal(valid.n_categories, 10);
    const char *bare = family_dir("fam_frameless", "b_lockers.json", "\"test\"", "\"locker code\"",
                                  "", "\"A1\"");
    mn_probe_templates frameless;
    assert_int_equal(mn_probe_templates_load(bare, MN_SPLIT_TRAIN, &frameless), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&frameless, bare, 10, 1), MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "open_frames"));
    assert_int_equal(frameless.n_categories, 1);
    mn_probe_templates_free(&frameless);

    int loaded = t.n_categories;
    assert_int_equal(mn_probe_templates_open_families(&t, templates_dir(), 1000, 5), MN_OK);
    assert_int_equal(t.n_categories, loaded + 1000);
    char **held_phr = NULL, **keys = NULL;
    int n_held_phr = 0, n_keys = 0;
    add_phrasings(&valid, &held_phr, &n_held_phr);
    add_phrasings(&test, &held_phr, &n_held_phr);
    const mn_probe_templates *heldout[2] = {&valid, &test};
    char buf[512];
    for (int c = loaded; c < t.n_categories; c++) {
        const mn_fact_category *cat = &t.categories[c];
        assert_true(is_open_family(cat));
        assert_int_equal(cat->held_out, 0);
        assert_in_range(cat->n_keys, 5, 8);
        assert_in_range(cat->n_facts, 3, 6);
        assert_in_range(cat->n_updates, 1, 3);
        assert_in_range(cat->n_questions, 2, 4);
        assert_in_range(cat->n_self_questions, 2, 4);
        assert_in_range(cat->n_values, 8, MN_OPEN_FAMILY_VALUES);
        for (int k = 0; k < cat->n_keys; k++) {
            for (int h = 0; h < 2; h++)
                for (int o = 0; o < heldout[h]->n_categories; o++) {
                    const mn_fact_category *other = &heldout[h]->categories[o];
                    for (int m = 0; m < other->n_keys; m++) {
                        assert_null(strcasestr(cat->keys[k], other->keys[m]));
                        assert_null(strcasestr(other->keys[m], cat->keys[k]));
                        if (other->held_out && share_word(cat->keys[k], other->keys[m]))
                            fail_msg("key \"%s\" shares a word with held-out key \"%s\"",
                                     cat->keys[k], other->keys[m]);
                    }
                }
            for (int j = 0; j < k; j++) {
                assert_null(strcasestr(cat->keys[k], cat->keys[j]));
                assert_null(strcasestr(cat->keys[j], cat->keys[k]));
            }
            keys = realloc(keys, (size_t)(n_keys + 1) * sizeof *keys);
            keys[n_keys] = strdup(cat->keys[k]);
            for (char *p = keys[n_keys]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            n_keys++;
        }
        for (int v = 0; v < cat->n_values; v++) {
            for (int h = 0; h < 2; h++)
                assert_int_equal(category_of_value(heldout[h], cat->values[v]), -1);
            for (int h = 0; h < 2; h++)
                for (int o = 0; o < heldout[h]->n_categories; o++)
                    for (int w = 0; w < heldout[h]->categories[o].n_values; w++)
                        assert_true(strcasecmp(cat->values[v], heldout[h]->categories[o].values[w]));
            for (int q = 0; q < cat->n_questions; q++)
                assert_false(has_word_ci(cat->questions[q], cat->values[v]));
            for (int q = 0; q < cat->n_self_questions; q++)
                assert_false(has_word_ci(cat->self_questions[q], cat->values[v]));
            for (int k = 0; k < cat->n_keys; k++)
                assert_false(has_word_ci(cat->keys[k], cat->values[v]));
            for (int w = 0; w < v; w++)
                assert_true(strcasecmp(cat->values[v], cat->values[w]));
        }
        char **mine[4] = {cat->facts, cat->updates, cat->questions, cat->self_questions};
        int n_mine[4] = {cat->n_facts, cat->n_updates, cat->n_questions, cat->n_self_questions};
        char **pool[4] = {of->facts, of->updates, of->questions, of->self_questions};
        int n_pool[4] = {of->n_facts, of->n_updates, of->n_questions, of->n_self_questions};
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < n_mine[l]; i++) {
                assert_true(in_list(pool[l], n_pool[l], mine[l][i]));
                letters_of(mine[l][i], buf, sizeof buf);
                assert_false(in_list(held_phr, n_held_phr, buf));
            }
    }
    /* keys: unique across families, and no key holds another as whole words */
    qsort(keys, (size_t)n_keys, sizeof *keys, cmp_str);
    for (int i = 0; i < n_keys; i++) {
        if (i > 0)
            assert_true(strcmp(keys[i - 1], keys[i]) != 0);
        const char *words[16];
        int n_words = 0;
        for (const char *p = keys[i]; *p && n_words < 16; p += strcspn(p, " "), p += strspn(p, " "))
            words[n_words++] = p;
        for (int a = 0; a < n_words; a++)
            for (int b = a; b < n_words; b++) {
                if (a == 0 && b == n_words - 1)
                    continue; /* the key itself */
                size_t len = b + 1 < n_words ? (size_t)(words[b + 1] - words[a] - 1)
                                             : strlen(words[a]);
                snprintf(buf, sizeof buf, "%.*s", (int)len, words[a]);
                const char *run = buf;
                if (bsearch(&run, keys, (size_t)n_keys, sizeof *keys, cmp_str))
                    fail_msg("generated key \"%s\" holds generated key \"%s\"", keys[i], buf);
            }
    }
    /* deterministic in the seed */
    mn_probe_templates again, other_seed;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &other_seed), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&again, templates_dir(), 1000, 5), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&other_seed, templates_dir(), 1000, 6), MN_OK);
    int same_as_other = 1;
    for (int c = loaded; c < t.n_categories; c++) {
        const mn_fact_category *a = &t.categories[c], *b = &again.categories[c];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->n_keys, b->n_keys);
        for (int k = 0; k < a->n_keys; k++)
            assert_string_equal(a->keys[k], b->keys[k]);
        assert_int_equal(a->n_facts, b->n_facts);
        for (int i = 0; i < a->n_facts; i++)
            assert_string_equal(a->facts[i], b->facts[i]);
        assert_int_equal(a->n_self_questions, b->n_self_questions);
        for (int i = 0; i < a->n_self_questions; i++)
            assert_string_equal(a->self_questions[i], b->self_questions[i]);
        assert_int_equal(a->n_values, b->n_values);
        for (int v = 0; v < a->n_values; v++)
            assert_string_equal(a->values[v], b->values[v]);
        same_as_other &= !strcmp(a->keys[0], other_seed.categories[c].keys[0]);
    }
    assert_false(same_as_other);
    mn_probe_templates_free(&again);
    mn_probe_templates_free(&other_seed);
    free_list(keys, n_keys);
    free_list(held_phr, n_held_phr);
    mn_probe_templates_free(&t);
    mn_probe_templates_free(&valid);
    mn_probe_templates_free(&test);
}

/* ------------------------------------------------------------------ span families */

/* A sentence of function words only: no span of it is a value. */
#define FUNCTION_WORDS_ONLY "Yeah, that would have been there."

/* Real sentences, a few with words that are no span word ("$20", "3rd", "e-mail's" is one). */
static const char *const span_sentences[] = {
    FUNCTION_WORDS_ONLY,
    "We walked along the quiet harbour yesterday, watching the sailboats drift.",
    "My grandmother bakes sourdough bread every Sunday morning.",
    "Honestly, the mountain trail was steeper than I expected!",
    "Did you catch the thunderstorm last night?",
    "I'm re-reading an old detective novel about a lighthouse keeper.",
    "The orchestra played something by Debussy; it felt dreamy.",
    "That bakery charges $20 for a slice of carrot cake, which is ridiculous.",
    "She finished 3rd in the regional chess tournament (again).",
    "Our neighbours adopted a scruffy greyhound named after a comet.",
    "I never understood why people queue overnight for sneakers.",
    "The museum's new dinosaur exhibit opens on Friday.",
    "Could you forward me the e-mail's attachment later?",
    "Volcanoes fascinate me, especially the ones under the ocean.",
    "He plays bass guitar in a jazz quartet downtown.",
    "Pancakes with blueberries are the best breakfast, no contest.",
    "The ferry was cancelled because of heavy fog near the island.",
};

/* Lower-cased valid and test values of every family, the ones only letters and spaces (those
 * a span could hold). */
static void heldout_word_values(char ***out, int *n) {
    *out = NULL;
    *n = 0;
    for (int s = 0; s < 2; s++) {
        mn_probe_templates t;
        assert_int_equal(mn_probe_templates_load(templates_dir(), s ? MN_SPLIT_TEST : MN_SPLIT_VALID, &t), MN_OK);
        for (int c = 0; c < t.n_categories; c++)
            for (int v = 0; v < t.categories[c].n_values; v++) {
                const char *value = t.categories[c].values[v];
                if (value[strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")])
                    continue;
                *out = realloc(*out, (size_t)(*n + 1) * sizeof **out);
                (*out)[(*n)++] = strdup(value);
            }
        mn_probe_templates_free(&t);
    }
    assert_true(*n >= 40);
}

/* Dialogues of real sentences, every other turn saying a held-out value inside a sentence
 * ("I always say olive green when people ask."), so that spans equal to or holding one are
 * there to be refused. */
static void make_span_dialogues(mn_dialogue_list *list, char **heldout, int n_heldout) {
    memset(list, 0, sizeof *list);
    const int n_sentences = (int)(sizeof span_sentences / sizeof *span_sentences);
    for (int i = 0, next = 0; i < 40; i++) {
        mn_dialogue d = {0};
        char buf[256];
        snprintf(buf, sizeof buf, "real-%d", i);
        d.id = strdup(buf);
        d.n_turns = 8;
        d.turns = calloc((size_t)d.n_turns, sizeof *d.turns);
        for (int t = 0; t < d.n_turns; t++, next++) {
            d.turns[t].speaker = strdup(t % 2 ? "B" : "A");
            if (t % 2)
                snprintf(buf, sizeof buf, "I always say %s when people ask.", heldout[next % n_heldout]);
            else
                snprintf(buf, sizeof buf, "%s", span_sentences[next % n_sentences]);
            d.turns[t].text = strdup(buf);
            d.turns[t].date = strdup("2023-05-08");
        }
        assert_int_equal(mn_dialogue_list_push(list, &d), MN_OK);
    }
}

/* A span value: 1 to 3 words of letters (apostrophes and hyphens inside), the last one of 4+
 * letters and no function word, said as whole words in some turn of `dialogues`, and neither equal to nor holding as whole
 * words a held-out value. */
static void assert_span_value(const char *value, const mn_dialogue_list *dialogues, char **heldout, int n_heldout) {
    int words = 0, last_letters = 0, letters = 0;
    const char *last = value;
    for (const char *p = value;; p++) {
        if (*p == ' ' || !*p) {
            assert_true(letters > 0 && isalpha((unsigned char)p[-1]));
            words++;
            last_letters = letters;
            letters = 0;
            if (!*p)
                break;
            last = p + 1;
            continue;
        }
        if (isalpha((unsigned char)*p))
            letters++;
        else if (!(*p == '\'' || *p == '-') || letters == 0)
            fail_msg("span \"%s\" has a word that is not letters", value);
    }
    assert_in_range(words, 1, 3);
    if (last_letters < 4 || has_word_ci(FUNCTION_WORDS_ONLY, last))
        fail_msg("span \"%s\" does not end on a word of 4+ letters outside the function words", value);
    int found = 0;
    for (int64_t i = 0; i < dialogues->count && !found; i++)
        for (int t = 0; t < dialogues->items[i].n_turns && !found; t++)
            found = has_word_ci(dialogues->items[i].turns[t].text, value);
    if (!found)
        fail_msg("span \"%s\" is said in no turn", value);
    for (int h = 0; h < n_heldout; h++)
        if (has_word_ci(value, heldout[h]))
            fail_msg("span \"%s\" holds the held-out value \"%s\"", value, heldout[h]);
}

/* A hash of the families from index `from` on: names aside, every list and string in order. */
static uint64_t families_hash(const mn_probe_templates *t, int from) {
    uint64_t h = 0;
    for (int c = from; c < t->n_categories; c++) {
        const mn_fact_category *x = &t->categories[c];
        char **lists[6] = {x->keys, x->facts, x->updates, x->questions, x->self_questions, x->values};
        int n[6] = {x->n_keys, x->n_facts, x->n_updates, x->n_questions, x->n_self_questions, x->n_values};
        for (int l = 0; l < 6; l++) {
            h = (h ^ (uint64_t)n[l]) * 1099511628211ull;
            for (int i = 0; i < n[l]; i++)
                h = (h ^ mn_hash_str(lists[l][i], strlen(lists[l][i]))) * 1099511628211ull;
        }
    }
    return h;
}

static void assert_same_families(const mn_probe_templates *a, const mn_probe_templates *b) {
    assert_int_equal(a->n_categories, b->n_categories);
    for (int c = 0; c < a->n_categories; c++) {
        const mn_fact_category *x = &a->categories[c], *y = &b->categories[c];
        assert_string_equal(x->name, y->name);
        char **lx[5] = {x->keys, x->facts, x->questions, x->self_questions, x->values};
        char **ly[5] = {y->keys, y->facts, y->questions, y->self_questions, y->values};
        int nx[5] = {x->n_keys, x->n_facts, x->n_questions, x->n_self_questions, x->n_values};
        int ny[5] = {y->n_keys, y->n_facts, y->n_questions, y->n_self_questions, y->n_values};
        for (int l = 0; l < 5; l++) {
            assert_int_equal(nx[l], ny[l]);
            for (int i = 0; i < nx[l]; i++)
                assert_string_equal(lx[l][i], ly[l][i]);
        }
    }
}

/* --span-families: with chance 1 every open family takes real spans of the dialogues, none a
 * held-out value or holding one; with chance 0 the families are those of plain open families;
 * deterministic in the seed; train split and dialogues required. */
static void test_span_families(void **state) {
    (void)state;
    char **heldout;
    int n_heldout;
    heldout_word_values(&heldout, &n_heldout);
    mn_dialogue_list dialogues;
    make_span_dialogues(&dialogues, heldout, n_heldout);
    mn_probe_templates t, plain, again, valid;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    const int loaded = t.n_categories;
    assert_true(t.open_frames->n_kind_words[MN_OPEN_SPAN] >= 3);

    mn_open_spans all = {.prob = 1, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 300, 4, &all), MN_OK);
    assert_int_equal(all.families, 300);
    int64_t values = 0;
    for (int c = loaded; c < t.n_categories; c++) {
        const mn_fact_category *cat = &t.categories[c];
        assert_true(cat->n_values >= 16);
        for (int v = 0; v < cat->n_values; v++) {
            assert_span_value(cat->values[v], &dialogues, heldout, n_heldout);
            for (int w = 0; w < v; w++)
                assert_true(strcasecmp(cat->values[v], cat->values[w]));
            for (int q = 0; q < cat->n_questions; q++)
                assert_false(has_word_ci(cat->questions[q], cat->values[v]));
        }
        values += cat->n_values;
    }
    assert_int_equal(all.values, values);

    /* chance 0: the families of mn_probe_templates_open_families, dialogues or not */
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &plain), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&plain, templates_dir(), 300, 4), MN_OK);
    mn_open_spans none = {.prob = 0, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&again, templates_dir(), 300, 4, &none), MN_OK);
    assert_int_equal(none.families, 0);
    assert_same_families(&plain, &again);
    /* and those made before span families existed (commit c347190, the shipped data/probes):
     * no draw was added to the families' stream. A deliberate change to the generator or to
     * open_frames.json's frames and word lists changes this hash: take the new one then. */
    assert_int_equal(families_hash(&again, loaded), 0x86e2ee259fcb4cd4ull);
    mn_probe_templates_free(&again);

    /* a mix, the same for the same seed; the drawn families as they would be */
    mn_probe_templates mixed;
    mn_open_spans half = {.prob = 0.5, .dialogues = &dialogues}, half2 = half;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &mixed), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&mixed, templates_dir(), 300, 4, &half), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&again, templates_dir(), 300, 4, &half2), MN_OK);
    assert_same_families(&mixed, &again);
    assert_in_range(half.families, 100, 200);
    int said = 0; /* families whose values are all said in the dialogues: the span ones */
    for (int c = loaded; c < mixed.n_categories; c++) {
        const mn_fact_category *cat = &mixed.categories[c];
        int all_said = 1;
        for (int v = 0; v < cat->n_values && all_said; v++) {
            int found = 0;
            for (int64_t i = 0; i < dialogues.count && !found; i++)
                for (int u = 0; u < dialogues.items[i].n_turns && !found; u++)
                    found = has_word_ci(dialogues.items[i].turns[u].text, cat->values[v]);
            all_said = found;
        }
        said += all_said;
    }
    assert_int_equal(said, half.families);
    mn_probe_templates_free(&again);
    mn_probe_templates_free(&mixed);

    /* refused, the templates left as they were: held-out splits, no dialogues, a bad chance */
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_VALID, &valid), MN_OK);
    const int n_valid = valid.n_categories;
    assert_int_equal(mn_probe_templates_open_families_spans(&valid, templates_dir(), 10, 4, &all), MN_ERR_CONFIG);
    assert_int_equal(valid.n_categories, n_valid);
    mn_open_spans no_dialogues = {.prob = 0.5}, too_likely = {.prob = 1.5, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&plain, templates_dir(), 10, 4, &no_dialogues),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "--jsonl"));
    assert_int_equal(mn_probe_templates_open_families_spans(&plain, templates_dir(), 10, 4, &too_likely),
                     MN_ERR_CONFIG);
    assert_int_equal(plain.n_categories, loaded + 300);
    mn_probe_templates_free(&valid);
    /* dialogues without a span ("d3 t5"): the family is short of values */
    mn_dialogue_list bare;
    make_dialogues(&bare, 5, 4, 8);
    mn_open_spans from_bare = {.prob = 1, .dialogues = &bare};
    mn_probe_templates short_of_spans;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &short_of_spans), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&short_of_spans, templates_dir(), 2, 4, &from_bare),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "span values"));
    assert_int_equal(short_of_spans.n_categories, loaded);
    mn_dialogue_list_free(&bare);
    mn_probe_templates_free(&short_of_spans);
    mn_probe_templates_free(&plain);
    mn_probe_templates_free(&t);
    mn_dialogue_list_free(&dialogues);
    free_list(heldout, n_heldout);
}

/* The stem of a lower-case word as the generator compares words: a trailing "'s" or plural "s"
 * dropped. */
static void word_stem_of(const char *w, size_t n, char *out, size_t cap) {
    if (n > 2 && w[n - 2] == '\'' && w[n - 1] == 's')
        n -= 2;
    else if (n > 3 && w[n - 1] == 's')
        n--;
    snprintf(out, cap, "%.*s", (int)n, w);
}

/* A word family's value: 1 to 3 words ("The" before them in title families), each of 4+ letters
 * and inner hyphens, said as a whole word in some turn, no function word, sharing no stem with
 * a word of a held-out value; all lower case (words) or each word capitalised (title). */
static void assert_words_value(const char *value, int title, const mn_dialogue_list *dialogues,
                               char **heldout, int n_heldout) {
    const char *p = value;
    if (title && !strncmp(p, "The ", 4))
        p += 4;
    int words = 0;
    while (*p) {
        size_t n = strcspn(p, " ");
        char word[64], low[64], stem[64];
        assert_true(n >= 4 && n < sizeof word);
        snprintf(word, sizeof word, "%.*s", (int)n, p);
        for (size_t i = 0; i <= n; i++)
            low[i] = (char)tolower((unsigned char)word[i]);
        for (size_t i = 0; i < n; i++)
            assert_true(isalpha((unsigned char)word[i]) || (word[i] == '-' && i > 0 && i + 1 < n));
        if (title ? !isupper((unsigned char)word[0]) || strcmp(word + 1, low + 1) : strcmp(word, low))
            fail_msg("word family value \"%s\": \"%s\" is not in its family's case", value, word);
        assert_false(has_word_ci(FUNCTION_WORDS_ONLY, low));
        int found = 0;
        for (int64_t i = 0; i < dialogues->count && !found; i++)
            for (int t = 0; t < dialogues->items[i].n_turns && !found; t++)
                found = has_word_ci(dialogues->items[i].turns[t].text, low);
        if (!found)
            fail_msg("word family value \"%s\": \"%s\" is said in no turn", value, word);
        word_stem_of(low, n, stem, sizeof stem);
        for (int h = 0; h < n_heldout; h++)
            for (const char *q = heldout[h]; *q; q += strspn(q, " ")) {
                size_t m = strcspn(q, " ");
                char other[64];
                word_stem_of(q, m < sizeof other ? m : sizeof other - 1, other, sizeof other);
                if (!strcmp(stem, other))
                    fail_msg("word family value \"%s\" has a word of the held-out value \"%s\"", value,
                             heldout[h]);
                q += m;
            }
        words++;
        p += n;
        p += strspn(p, " ");
    }
    assert_in_range(words, 1, 3);
}

/* --word-families: with chance 1 every open family is of the words or title kind, its values
 * real words of the dialogues none of which is a word of a held-out value (the dialogues say
 * every held-out value); with chance 0 the families are those of plain open families; with
 * spans beside, a family is one or the other; deterministic in the seed; refused without
 * dialogues or with a chance outside [0, 1]. */
static void test_word_families(void **state) {
    (void)state;
    char **heldout;
    int n_heldout;
    heldout_word_values(&heldout, &n_heldout);
    for (int h = 0; h < n_heldout; h++) /* heldout_word_values keeps their case */
        for (char *q = heldout[h]; *q; q++)
            *q = (char)tolower((unsigned char)*q);
    mn_dialogue_list dialogues;
    make_span_dialogues(&dialogues, heldout, n_heldout);
    mn_probe_templates t, plain, again;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    const int loaded = t.n_categories;
    assert_true(t.open_frames->n_kind_words[MN_OPEN_WORDS] >= 3);
    assert_true(t.open_frames->n_kind_words[MN_OPEN_TITLE] >= 3);

    mn_open_spans all = {.words_prob = 1, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 200, 5, &all), MN_OK);
    assert_int_equal(all.words_families, 200);
    assert_int_equal(all.families, 0);
    int64_t values = 0;
    int titles = 0, the = 0, lengths[4] = {0};
    for (int c = loaded; c < t.n_categories; c++) {
        const mn_fact_category *cat = &t.categories[c];
        assert_true(cat->n_values >= 16);
        int title = isupper((unsigned char)cat->values[0][0]) != 0;
        titles += title;
        for (int v = 0; v < cat->n_values; v++) {
            assert_words_value(cat->values[v], title, &dialogues, heldout, n_heldout);
            the += !strncmp(cat->values[v], "The ", 4);
            int words = 1;
            for (const char *p = cat->values[v] + (strncmp(cat->values[v], "The ", 4) ? 0 : 4); *p; p++)
                words += *p == ' ';
            lengths[words]++;
            for (int w = 0; w < v; w++)
                assert_true(strcasecmp(cat->values[v], cat->values[w]));
            for (int q = 0; q < cat->n_questions; q++)
                assert_false(has_word_ci(cat->questions[q], cat->values[v]));
        }
        values += cat->n_values;
    }
    assert_int_equal(all.words_values, values);
    assert_in_range(titles, 70, 130);           /* one in two */
    assert_true(the > 0);                       /* a quarter of the title values */
    assert_true(lengths[1] > 0 && lengths[2] > lengths[1] && lengths[3] > 0);

    /* chance 0: the families of mn_probe_templates_open_families */
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &plain), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&plain, templates_dir(), 200, 5), MN_OK);
    mn_open_spans none = {.dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&again, templates_dir(), 200, 5, &none), MN_OK);
    assert_int_equal(none.words_families, 0);
    assert_same_families(&plain, &again);
    mn_probe_templates_free(&again);

    /* beside span families: each family one kind, the same for the same seed */
    mn_probe_templates mixed;
    mn_open_spans both = {.prob = 0.3, .words_prob = 0.5, .dialogues = &dialogues}, both2 = both;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &mixed), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&mixed, templates_dir(), 200, 5, &both), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&again, templates_dir(), 200, 5, &both2), MN_OK);
    assert_same_families(&mixed, &again);
    assert_in_range(both.families, 30, 90);
    assert_in_range(both.words_families, 40, 100); /* half of the non-span ones */
    assert_true(both.families + both.words_families < 200);
    mn_probe_templates_free(&again);
    mn_probe_templates_free(&mixed);

    /* refused, the templates left as they were */
    mn_open_spans no_dialogues = {.words_prob = 0.5}, too_likely = {.words_prob = 1.5, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&plain, templates_dir(), 10, 5, &no_dialogues),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "--jsonl"));
    assert_int_equal(mn_probe_templates_open_families_spans(&plain, templates_dir(), 10, 5, &too_likely),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "word families"));
    assert_int_equal(plain.n_categories, loaded + 200);
    mn_probe_templates_free(&plain);
    mn_probe_templates_free(&t);
    mn_dialogue_list_free(&dialogues);
    free_list(heldout, n_heldout);
}

/* Lower-cased words of the keys of every held-out family (valid and test splits). */
static void heldout_key_words(mn_strset *out) {
    memset(out, 0, sizeof *out);
    for (int s = 0; s < 2; s++) {
        mn_probe_templates t;
        assert_int_equal(mn_probe_templates_load(templates_dir(), s ? MN_SPLIT_TEST : MN_SPLIT_VALID, &t), MN_OK);
        for (int c = 0; c < t.n_categories; c++)
            for (int k = 0; t.categories[c].held_out && k < t.categories[c].n_keys; k++)
                for (const char *q = t.categories[c].keys[k]; *q; q += strspn(q, " ")) {
                    size_t m = strcspn(q, " ");
                    char word[64];
                    snprintf(word, sizeof word, "%.*s", (int)m, q);
                    for (char *w = word; *w; w++)
                        *w = (char)tolower((unsigned char)*w);
                    char *own = strstr(word, "'s");
                    if (own && !own[2])
                        *own = '\0';
                    int added;
                    assert_int_equal(mn_strset_add(out, word, &added), MN_OK);
                    q += m;
                }
        mn_probe_templates_free(&t);
    }
    assert_true(out->count >= 10);
}

/* The held-out keys' words (heldout_key_words) and dialogues that say each of them beside real
 * sentences (make_span_dialogues), so that a generator drawing words of the dialogues meets
 * them; said holds the words, for free_list. */
static void dialogues_saying_heldout_keys(mn_strset *heldout_keys, char ***said, int *n_said,
                                          mn_dialogue_list *dialogues) {
    heldout_key_words(heldout_keys);
    *said = NULL;
    *n_said = 0;
    for (size_t b = 0; b < heldout_keys->cap; b++)
        if (heldout_keys->slots[b]) {
            *said = realloc(*said, (size_t)(*n_said + 1) * sizeof **said);
            (*said)[(*n_said)++] = strdup(heldout_keys->slots[b]);
        }
    make_span_dialogues(dialogues, *said, *n_said);
}

/* An open-family option drawn from a stream of its own: with chance 0 (`zero`) the families
 * are those of mn_probe_templates_open_families and none is counted; with `half` (chances of
 * 0.5) between 70 and 130 of 200 families are counted, the same families for the same seed.
 * `count` is the offset of the option's count in mn_open_spans. */
static void assert_chance_zero_and_half(mn_open_spans zero, mn_open_spans half, size_t count) {
    mn_probe_templates plain, again, half1, half2;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &plain), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &again), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&plain, templates_dir(), 200, 5), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&again, templates_dir(), 200, 5, &zero), MN_OK);
    assert_int_equal(*(const int *)((const char *)&zero + count), 0);
    assert_same_families(&plain, &again);
    mn_probe_templates_free(&plain);
    mn_probe_templates_free(&again);

    mn_open_spans h2 = half;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &half1), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &half2), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&half1, templates_dir(), 200, 5, &half), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&half2, templates_dir(), 200, 5, &h2), MN_OK);
    assert_same_families(&half1, &half2);
    int made = *(const int *)((const char *)&half + count);
    assert_in_range(made, 70, 130);
    assert_int_equal(made, *(const int *)((const char *)&h2 + count));
    mn_probe_templates_free(&half1);
    mn_probe_templates_free(&half2);
}

/* --word-keys: with chance 1 every open family's keys are made of words said in the dialogues
 * (besides an owner or a kind word) and none is a word of a held-out family's key, though the
 * dialogues say every held-out key; with chance 0 nothing changes; with chance 0.5 about half
 * the families, the same for the same seed; refused without dialogues or outside [0, 1]. */
static void test_word_keys(void **state) {
    (void)state;
    mn_strset heldout_keys;
    char **heldout_values;
    int n_values;
    heldout_word_values(&heldout_values, &n_values);
    char **said;
    int n_said;
    mn_dialogue_list dialogues;
    dialogues_saying_heldout_keys(&heldout_keys, &said, &n_said, &dialogues);
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    const int loaded = t.n_categories;
    const mn_open_frames *of = t.open_frames;

    mn_open_spans all = {.keys_prob = 1, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 200, 5, &all), MN_OK);
    assert_int_equal(all.keys_families, 200);
    for (int c = loaded; c < t.n_categories; c++)
        for (int k = 0; k < t.categories[c].n_keys; k++) {
            const char *key = t.categories[c].keys[k];
            /* the words besides a kind word at the end (some are two words: "start time") */
            char rest[256];
            snprintf(rest, sizeof rest, "%s", key);
            size_t n = strlen(rest), longest = 0;
            for (int kind = 0; kind < MN_OPEN_KINDS; kind++)
                for (int w = 0; w < of->n_kind_words[kind]; w++) {
                    size_t m = strlen(of->kind_words[kind][w]);
                    if (n > m + 1 && m > longest && rest[n - m - 1] == ' ' &&
                        !strcmp(rest + n - m, of->kind_words[kind][w]))
                        longest = m;
                }
            if (longest)
                rest[n - longest - 1] = '\0';
            int said_words = 0;
            for (const char *q = rest; *q; q += strspn(q, " ")) {
                size_t m = strcspn(q, " ");
                char word[64], plural_less[64];
                snprintf(word, sizeof word, "%.*s", (int)m, q);
                q += m;
                char *own = strstr(word, "'s");
                if (own && !own[2])
                    *own = '\0';
                snprintf(plural_less, sizeof plural_less, "%s", word);
                size_t n = strlen(plural_less);
                if (n > 3 && plural_less[n - 1] == 's')
                    plural_less[n - 1] = '\0';
                if (mn_strset_has(&heldout_keys, word) || mn_strset_has(&heldout_keys, plural_less))
                    fail_msg("word key \"%s\" has \"%s\", a word of a held-out key", key, word);
                int listed = in_list(of->owners, of->n_owners, word);
                int found = 0;
                for (int64_t i = 0; i < dialogues.count && !found; i++)
                    for (int u = 0; u < dialogues.items[i].n_turns && !found; u++)
                        found = has_word_ci(dialogues.items[i].turns[u].text, word);
                if (!found && !listed)
                    fail_msg("word key \"%s\": \"%s\" is said in no turn and is no owner", key, word);
                said_words += found;
            }
            if (!said_words)
                fail_msg("word key \"%s\" has no word of the dialogues", key);
        }

    assert_chance_zero_and_half((mn_open_spans){.words_prob = 0, .keys_prob = 0, .dialogues = &dialogues},
                                (mn_open_spans){.keys_prob = 0.5, .words_prob = 0.5, .dialogues = &dialogues},
                                offsetof(mn_open_spans, keys_families));

    /* a corpus of a few words: its free words run out, and the lists fill the families */
    mn_dialogue_list tiny = {0};
    mn_dialogue one = {.id = strdup("tiny"), .n_turns = 1, .turns = calloc(1, sizeof *one.turns)};
    one.turns[0].speaker = strdup("A");
    one.turns[0].text = strdup("Lighthouse keepers watch sailboats drifting.");
    one.turns[0].date = strdup("2023-05-08");
    assert_int_equal(mn_dialogue_list_push(&tiny, &one), MN_OK);
    mn_probe_templates few;
    mn_open_spans tiny_keys = {.keys_prob = 1, .dialogues = &tiny};
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &few), MN_OK);
    assert_int_equal(mn_probe_templates_open_families_spans(&few, templates_dir(), 100, 5, &tiny_keys), MN_OK);
    assert_int_equal(tiny_keys.keys_families, 100);
    int tiny_word_keys = 0;
    for (int c = loaded; c < few.n_categories; c++) {
        assert_true(few.categories[c].n_keys >= 5);
        for (int k = 0; k < few.categories[c].n_keys; k++)
            tiny_word_keys += has_word_ci(few.categories[c].keys[k], "lighthouse") ||
                              has_word_ci(few.categories[c].keys[k], "keepers") ||
                              has_word_ci(few.categories[c].keys[k], "sailboats") ||
                              has_word_ci(few.categories[c].keys[k], "drifting");
    }
    assert_true(tiny_word_keys > 0);
    mn_probe_templates_free(&few);
    mn_dialogue_list_free(&tiny);

    /* refused, the templates left as they were */
    mn_open_spans no_dialogues = {.keys_prob = 0.5}, too_likely = {.keys_prob = -0.1, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 10, 5, &no_dialogues),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "--jsonl"));
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 10, 5, &too_likely),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "word keys"));
    assert_int_equal(t.n_categories, loaded + 200);
    mn_probe_templates_free(&t);
    mn_dialogue_list_free(&dialogues);
    free_list(said, n_said);
    free_list(heldout_values, n_values);
    mn_strset_free(&heldout_keys);
}

/* The last word of `key`, lower-cased ("code" of "cousin's code"). */
static void last_word(const char *key, char *out, size_t cap) {
    const char *sp = strrchr(key, ' ');
    snprintf(out, cap, "%s", sp ? sp + 1 : key);
    for (char *w = out; *w; w++)
        *w = (char)tolower((unsigned char)*w);
}

/* --shared-heads: with chance 1 every open family's keys (at least 2, distinct) end in one head
 * word and differ before it, no key holds a word of a held-out family's key though the
 * dialogues say them all, and families differ in their heads; with chance 0 nothing changes;
 * with 0.5 about half the families, the same for the same seed; refused outside [0, 1]. */
static void test_shared_heads(void **state) {
    (void)state;
    mn_strset heldout_keys;
    char **said;
    int n_said;
    mn_dialogue_list dialogues;
    dialogues_saying_heldout_keys(&heldout_keys, &said, &n_said, &dialogues);
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    const int loaded = t.n_categories;

    mn_open_spans all = {.keys_prob = 1, .heads_prob = 1, .dialogues = &dialogues};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 200, 5, &all), MN_OK);
    assert_int_equal(all.head_families, 200);
    mn_strset heads = {0};
    for (int c = loaded; c < t.n_categories; c++) {
        const mn_fact_category *cat = &t.categories[c];
        assert_true(cat->n_keys >= 2);
        char head[64];
        last_word(cat->keys[0], head, sizeof head);
        int added;
        assert_int_equal(mn_strset_add(&heads, head, &added), MN_OK);
        for (int k = 0; k < cat->n_keys; k++) {
            const char *key = cat->keys[k];
            char end[64];
            last_word(key, end, sizeof end);
            if (strcmp(end, head) || !strchr(key, ' '))
                fail_msg("family %s: key \"%s\" does not end in its head \"%s\"", cat->name, key, head);
            for (int j = 0; j < k; j++)
                if (!strcasecmp(key, cat->keys[j]))
                    fail_msg("family %s has the key \"%s\" twice", cat->name, key);
            for (const char *q = key; *q; q += strspn(q, " ")) {
                size_t m = strcspn(q, " ");
                char word[64];
                snprintf(word, sizeof word, "%.*s", (int)m, q);
                q += m;
                for (char *w = word; *w; w++)
                    *w = (char)tolower((unsigned char)*w);
                char *own = strstr(word, "'s");
                if (own && !own[2])
                    *own = '\0';
                if (mn_strset_has(&heldout_keys, word))
                    fail_msg("key \"%s\" has \"%s\", a word of a held-out key", key, word);
            }
        }
    }
    assert_true(heads.count >= 20); /* heads are drawn per family, not one for all */
    mn_strset_free(&heads);

    assert_chance_zero_and_half((mn_open_spans){.heads_prob = 0, .dialogues = &dialogues},
                                (mn_open_spans){.heads_prob = 0.5, .keys_prob = 0.5, .dialogues = &dialogues},
                                offsetof(mn_open_spans, head_families));

    /* refused, the templates left as they were */
    mn_open_spans too_likely = {.heads_prob = 1.5};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 10, 5, &too_likely),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "shared heads"));
    assert_int_equal(t.n_categories, loaded + 200);
    mn_probe_templates_free(&t);
    mn_dialogue_list_free(&dialogues);
    mn_strset_free(&heldout_keys);
    free_list(said, n_said);
}

/* Probes of open families (templates t as generated for the episodes): the fact turn holds the
 * key and the value, the question (of the asker's list: self when the fact's speaker asks)
 * holds the key and never the value. Returns how many probes were of open families. */
static int assert_open_family_probes(const mn_dialogue_list *eps, const mn_probe_templates *t) {
    int open = 0;
    for (int64_t e = 0; e < eps->count; e++)
        for (int p = 0; p < eps->items[e].n_probes; p++) {
            const mn_probe *q = &eps->items[e].probes[p];
            const mn_turn *fact = &eps->items[e].turns[q->evidence[0]];
            int self = !strcmp(q->speaker, fact->speaker);
            const char *key = NULL;
            const mn_fact_category *cat = NULL;
            for (int c = 0; c < t->n_categories && !key; c++) {
                cat = &t->categories[c];
                if (in_list(cat->values, cat->n_values, q->answer))
                    key = key_in(cat, self ? cat->self_questions : cat->questions,
                                 self ? cat->n_self_questions : cat->n_questions, q->question);
            }
            if (!key)
                fail_msg("no family asks \"%s\" with answer \"%s\"", q->question, q->answer);
            assert_true(has_word_ci(fact->text, key));
            assert_true(has_word_ci(fact->text, q->answer));
            assert_true(has_word_ci(q->question, key));
            if (has_word_ci(q->question, q->answer))
                fail_msg("question \"%s\" holds its answer \"%s\"", q->question, q->answer);
            for (int i = 0; i < q->n_choices; i++)
                assert_true(in_list(cat->values, cat->n_values, q->choices[i]));
            open += is_open_family(cat);
        }
    return open;
}

static void test_open_family_probes(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&t, templates_dir(), 1000, 9), MN_OK);
    mn_dialogue_list eps = build_episodes(300, 24, 3);
    static const mn_distance_range dist[] = {{1, 3}, {4, 8}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 2;
    pc.probes_per_episode = 2;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.askers = MN_ASKERS_BOTH;
    pc.interference = 1;
    pc.update_prob = 0.3;
    pc.seed = 9;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_true(stats.probes >= 100);
    assert_true(stats.update_probes > 0 && stats.interference_facts > 0);
    assert_true(assert_open_family_probes(&eps, &t) >= stats.probes * 9 / 10);
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* ------------------------------------------------------------------ embedded facts, rewrites */

static int count_of(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Rewrites of phrasings (rewrite.h): always different, placeholders kept (a question never
 * gains {value}), no contraction at a clause's end, indirect questions made from wh-questions. */
static void test_frame_rewrites(void **state) {
    (void)state;
    static const char *const facts[] = {"My {key} is {value}.", "{value} is what my {key} is.",
                                        "I have {value} down as my {key}",
                                        "What is it? My {key}: {value}!"};
    static const char *const questions[] = {"What is your {key}?", "What was my {key} again?",
                                            "Remind me: your {key}?",
                                            "what's the {key} you mentioned"};
    mn_rng rng;
    mn_rng_seed(&rng, 3);
    int indirect = 0, contracted = 0, expanded = 0, marked = 0;
    for (int r = 0; r < 400; r++)
        for (int q = 0; q < 2; q++)
            for (int i = 0; i < 4; i++) {
                const char *frame = q ? questions[i] : facts[i];
                char *v = NULL;
                assert_int_equal(mn_frame_vary(frame, q ? MN_FRAME_QUESTION : MN_FRAME_FACT, &rng, &v),
                                 MN_OK);
                assert_string_not_equal(v, frame);
                assert_int_equal(count_of(v, "{key}"), 1);
                assert_int_equal(count_of(v, "{value}"), q ? 0 : 1);
                assert_int_equal(count_of(v, "{"), q ? 1 : 2);
                if (strstr(v, "{key}'s.") || strstr(v, "{key}'s!") || strstr(v, "it's?"))
                    fail_msg("\"%s\" contracts at the end of a clause (from \"%s\")", v, frame);
                indirect += q && i == 0 && strstr(v, "what your {key} is") != NULL;
                contracted += !q && i == 0 && strstr(v, "{key}'s {value}") != NULL;
                expanded += q && i == 3 && strstr(v, "what is the {key}") != NULL;
                marked += !q && i == 0 && strstr(v, ", my {key}") != NULL;
                free(v);
            }
    assert_true(indirect > 0 && contracted > 0 && expanded > 0 && marked > 0);
}

/* A sentence placed in a real turn: kept whole (its first letter maybe lower-cased after a
 * joiner), before, between or after the real sentences (questions after them), within
 * max_chars, and nothing when even the first real sentence does not fit. */
static void test_embed_sentence(void **state) {
    (void)state;
    const char *real = "I saw it. It was great! Did you?";
    mn_rng rng;
    mn_rng_seed(&rng, 5);
    int first = 0, middle = 0, last = 0;
    for (int r = 0; r < 300; r++) {
        char *out = NULL;
        assert_int_equal(mn_embed_sentence(real, "My pin is 42.", MN_FRAME_FACT, 400, &rng, &out), MN_OK);
        assert_non_null(out);
        assert_non_null(strcasestr(out, "my pin is 42."));
        assert_non_null(strstr(out, "I saw it."));
        assert_non_null(strstr(out, "Did you?"));
        const char *fact = strcasestr(out, "my pin"), *saw = strstr(out, "I saw"), *did = strstr(out, "Did you");
        first += fact < saw;
        middle += fact > saw && fact < did;
        last += fact > did;
        free(out);
        assert_int_equal(mn_embed_sentence(real, "What is your pin?", MN_FRAME_QUESTION, 400, &rng, &out),
                         MN_OK);
        assert_true(!strncmp(out, "I saw it. It was great! Did you? ", 33));
        assert_non_null(strcasestr(out, "what is your pin?"));
        assert_int_equal(out[strlen(out) - 1], '?');
        free(out);
        /* a budget for the first sentence only; none for any */
        assert_int_equal(mn_embed_sentence(real, "My pin is 42.", MN_FRAME_FACT, 60, &rng, &out), MN_OK);
        assert_non_null(out);
        assert_true(strlen(out) <= 60);
        assert_null(strstr(out, "Did you?"));
        free(out);
        assert_int_equal(mn_embed_sentence(real, "My pin is 42.", MN_FRAME_FACT, 30, &rng, &out), MN_OK);
        assert_null(out);
    }
    assert_true(first > 0 && middle > 0 && last > 0);
    /* a real text without end marks gets one before what follows it */
    char *out = NULL;
    assert_int_equal(mn_embed_sentence("d3 t5", "Where is it?", MN_FRAME_QUESTION, 400, &rng, &out), MN_OK);
    assert_true(!strncmp(out, "d3 t5. ", 7));
    free(out);
}

/* The ids "d<i> t<j>" of the original turns in text, appended to ids (2 ints each). */
static int real_ids(const char *text, int *ids, int n, int cap) {
    for (const char *p = text; (p = strchr(p, 'd')); p++) {
        int d, t, len = 0;
        if ((p == text || p[-1] == ' ') && sscanf(p, "d%d t%d%n", &d, &t, &len) == 2 && len > 0 && n + 2 <= cap) {
            ids[n++] = d;
            ids[n++] = t;
        }
    }
    return n;
}

/* The fact turn of probe q holds its value whole and a key of the value's category that the
 * question holds too. */
static void assert_fact_says_key_and_value(const char *fact, const mn_probe *q, const mn_probe_templates *t) {
    if (!has_word_ci(fact, q->answer))
        fail_msg("fact turn \"%s\" does not hold its value \"%s\" whole", fact, q->answer);
    for (int c = 0; c < t->n_categories; c++) {
        const mn_fact_category *cat = &t->categories[c];
        if (in_list(cat->values, cat->n_values, q->answer))
            for (int k = 0; k < cat->n_keys; k++)
                if (has_word_ci(fact, cat->keys[k]) && has_word_ci(q->question, cat->keys[k]))
                    return;
    }
    fail_msg("no key of \"%s\" whole in both \"%s\" and \"%s\"", q->answer, fact, q->question);
}

/* Probes of a train run with --embed-facts / --frame-variety: the evidence turn holds the
 * value and a key that the question holds, the question never the value; the original turns
 * appear once each, in their order, whether in a turn of their own, around a fact or before a
 * question. Returns the number of evidence turns that hold real text (embedded facts); adds
 * questions holding real text to *real_questions. */
static int assert_embedded_probes(const mn_dialogue_list *eps, const mn_probe_templates *t,
                                  const mn_distance_range *range, int *real_questions) {
    int real_facts = 0;
    for (int64_t e = 0; e < eps->count; e++) {
        const mn_dialogue *ep = &eps->items[e];
        int ids[4096], n = 0;
        for (int i = 0; i <= ep->n_turns; i++) {
            for (int p = 0; p < ep->n_probes; p++)
                if (ep->probes[p].after == i)
                    n = real_ids(ep->probes[p].question, ids, n, 4096);
            if (i < ep->n_turns)
                n = real_ids(ep->turns[i].text, ids, n, 4096);
        }
        for (int a = 0; a < n; a += 2)
            for (int b = a + 2; b < n; b += 2) {
                assert_false(ids[a] == ids[b] && ids[a + 1] == ids[b + 1]);
                if (ids[a] == ids[b])
                    assert_true(ids[a + 1] < ids[b + 1]);
            }
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            const mn_turn *fact = &ep->turns[q->evidence[0]];
            int d = distance_of(q);
            assert_true(d >= range->lo && d <= range->hi);
            assert_fact_says_key_and_value(fact->text, q, t);
            if (has_word_ci(q->question, q->answer))
                fail_msg("question \"%s\" holds its answer \"%s\"", q->question, q->answer);
            int scratch[64];
            real_facts += real_ids(fact->text, scratch, 0, 64) > 0;
            *real_questions += real_ids(q->question, scratch, 0, 64) > 0;
        }
    }
    return real_facts;
}

/* 300 episodes of 24 turns, two template probes each at 1-8 turns (either asker, an interfering
 * fact, updates 0.3), with the given chances of embedded facts, varied phrasings, frame noise. */
static mn_dialogue_list text_run(const mn_probe_templates *t, double embed, double variety, double noise,
                                 uint64_t seed, mn_probe_stats *stats) {
    static const mn_distance_range dist[] = {{1, 8}};
    mn_dialogue_list eps = build_episodes(300, 24, 3);
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 1;
    pc.probes_per_episode = 2;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.askers = MN_ASKERS_BOTH;
    pc.interference = 1;
    pc.update_prob = 0.3;
    pc.embed_prob = embed;
    pc.variety_prob = variety;
    pc.noise_prob = noise;
    pc.seed = seed;
    memset(stats, 0, sizeof *stats);
    assert_int_equal(mn_probes_inject_all(&eps, t, NULL, &pc, stats), MN_OK);
    return eps;
}

/* Whether text holds a word of the test dialogues ("d12", "t3") as a word of its own. */
static int holds_dialogue_word(const char *text) {
    for (const char *p = text; *p; p++) {
        int len = 0, v;
        if ((p == text || p[-1] == ' ') && (*p == 'd' || *p == 't') && sscanf(p + 1, "%d%n", &v, &len) == 1 &&
            isdigit((unsigned char)p[1]) && (p[1 + len] == ' ' || p[1 + len] == '\0'))
            return 1;
    }
    return 0;
}

/* Fact turns whose text holds a word of the dialogues; each fact turn must hold its value and a
 * key of its category that the question holds, both whole. */
static int facts_with_noise(const mn_dialogue_list *eps, const mn_probe_templates *t, int *n_facts) {
    int noisy = 0;
    *n_facts = 0;
    for (int64_t e = 0; e < eps->count; e++) {
        const mn_dialogue *ep = &eps->items[e];
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            const char *fact = ep->turns[q->evidence[q->n_evidence - 1]].text;
            assert_fact_says_key_and_value(fact, q, t);
            noisy += holds_dialogue_word(fact);
            ++*n_facts;
        }
    }
    return noisy;
}

static void test_frame_noise(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_probe_stats all, half, none, s2;
    mn_dialogue_list noised = text_run(&t, 0, 0, 1.0, 9, &all), some = text_run(&t, 0, 0, 0.5, 9, &half),
                     plain = text_run(&t, 0, 0, 0, 9, &none), again = text_run(&t, 0, 0, 1.0, 9, &s2),
                     other = text_run(&t, 0, 0, 1.0, 10, &s2);
    assert_true(all.probes >= 100);
    assert_int_equal(all.noised_facts, all.fact_turns);
    assert_int_equal(none.noised_facts, 0);
    assert_true(half.noised_facts > half.fact_turns * 3 / 10 && half.noised_facts < half.fact_turns * 7 / 10);
    /* with noise nearly every fact turn holds dialogue words around its key and value (a
     * fragment before or after it alone comes with chance 0.84), without it none does */
    int n_all, n_plain;
    int noisy = facts_with_noise(&noised, &t, &n_all);
    assert_true(n_all >= 100 && noisy >= n_all * 8 / 10);
    assert_int_equal(facts_with_noise(&plain, &t, &n_plain), 0);
    assert_roundtrip_valid(&noised);
    /* deterministic in the seed; the option changes the output only when given */
    char *a = serialize(&noised), *b = serialize(&again), *c = serialize(&other), *h = serialize(&some),
         *n = serialize(&plain);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_not_equal(h, n);
    free(a), free(b), free(c), free(h), free(n);
    mn_dialogue_list *lists[] = {&noised, &some, &plain, &again, &other};
    for (int i = 0; i < 5; i++)
        mn_dialogue_list_free(lists[i]);
    /* refused outside [0, 1] and for held-out material */
    mn_dialogue_list eps = build_episodes(20, 24, 3);
    mn_probe_config pc = mn_probe_config_default();
    pc.sources = MN_FACTS_TEMPLATES;
    pc.noise_prob = 1.5;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &s2), MN_ERR_CONFIG);
    mn_probe_templates_free(&t);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_VALID, &t), MN_OK);
    pc.noise_prob = 0.5;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &s2), MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "train split only"));
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

static void test_embed_and_variety_probes(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&t, templates_dir(), 1000, 9), MN_OK);
    mn_probe_stats stats, s2;
    mn_dialogue_list both = text_run(&t, 0.5, 0.5, 0, 9, &stats);
    assert_true(stats.probes >= 100);
    assert_true(stats.embedded_facts >= stats.fact_turns / 10);
    assert_true(stats.embedded_questions >= stats.probes / 20);
    assert_true(stats.varied_phrasings >= (stats.fact_turns + stats.probes) / 4);
    static const mn_distance_range range = {1, 8};
    int real_questions = 0;
    int real_facts = assert_embedded_probes(&both, &t, &range, &real_questions);
    assert_true(real_facts > 0 && real_facts <= stats.embedded_facts);
    assert_int_equal(real_questions, stats.embedded_questions);
    assert_roundtrip_valid(&both);
    /* deterministic in the seed; each option changes the output, and only when given */
    mn_dialogue_list again = text_run(&t, 0.5, 0.5, 0, 9, &s2), other = text_run(&t, 0.5, 0.5, 0, 10, &s2),
                     none = text_run(&t, 0, 0, 0, 9, &s2), embed = text_run(&t, 0.5, 0, 0, 9, &s2),
                     variety = text_run(&t, 0, 0.5, 0, 9, &s2);
    assert_int_equal(s2.embedded_facts + s2.embedded_questions, 0);
    char *a = serialize(&both), *b = serialize(&again), *c = serialize(&other), *n = serialize(&none),
         *em = serialize(&embed), *va = serialize(&variety);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_not_equal(n, em);
    assert_string_not_equal(n, va);
    assert_string_not_equal(em, va);
    free(a), free(b), free(c), free(n), free(em), free(va);
    /* without the options, no turn holds two original turns and no question holds one */
    real_questions = 0;
    assert_int_equal(assert_embedded_probes(&none, &t, &range, &real_questions), 0);
    assert_int_equal(real_questions, 0);
    mn_dialogue_list *lists[] = {&both, &again, &other, &none, &embed, &variety};
    for (int i = 0; i < 6; i++)
        mn_dialogue_list_free(lists[i]);
    /* short episodes where facts and questions take many original turns: every slot is still
     * filled, each original turn once and in order */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        static const mn_distance_range all[] = {{1, 11}};
        mn_dialogue_list tight = build_episodes(600, 12, seed);
        mn_probe_config pc = mn_probe_config_default();
        pc.distances = all;
        pc.n_distances = 1;
        pc.probes_per_episode = 3;
        pc.sources = MN_FACTS_TEMPLATES;
        pc.askers = MN_ASKERS_BOTH;
        pc.embed_prob = 1.0;
        pc.seed = seed;
        mn_probe_stats st = {0};
        assert_int_equal(mn_probes_inject_all(&tight, &t, NULL, &pc, &st), MN_OK);
        assert_true(st.embedded_facts > 0 && st.embedded_questions > 0);
        for (int64_t e = 0; e < tight.count; e++)
            for (int i = 0; i < tight.items[e].n_turns; i++)
                assert_non_null(tight.items[e].turns[i].text);
        real_questions = 0;
        assert_embedded_probes(&tight, &t, &all[0], &real_questions);
        assert_roundtrip_valid(&tight);
        mn_dialogue_list_free(&tight);
    }
    mn_probe_templates_free(&t);
    /* held-out splits keep their phrasings: refused for valid and test, and for persona facts */
    for (int s = 1; s < 3; s++) {
        mn_probe_templates held;
        assert_int_equal(mn_probe_templates_load(templates_dir(), (mn_split)(MN_SPLIT_TRAIN + s), &held), MN_OK);
        for (int o = 0; o < 2; o++) {
            mn_dialogue_list eps = build_episodes(20, 24, 3);
            mn_probe_config pc = mn_probe_config_default();
            pc.sources = MN_FACTS_TEMPLATES;
            pc.embed_prob = o ? 0 : 0.5;
            pc.variety_prob = o ? 0.5 : 0;
            mn_probe_stats st = {0};
            assert_int_equal(mn_probes_inject_all(&eps, &held, NULL, &pc, &st), MN_ERR_CONFIG);
            assert_non_null(strstr(mn_last_error(), "train split only"));
            mn_dialogue_list_free(&eps);
        }
        mn_probe_templates_free(&held);
    }
}

/* No rewrite is ever a valid or test phrasing: a family whose held-out phrasings are one
 * marker, tag or wrapper away from its train ones. */
static void test_variety_avoids_heldout_phrasings(void **state) {
    (void)state;
    const char *dir = tmp_path("variety_templates");
    char cmd[1024], path[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/gadgets.json", dir);
    write_text(path,
               "{\"category\": \"gadgets\", \"keys\": [\"zoo pass\", \"boat pin\", \"attic lamp\"],\n"
               " \"fact\": {\"train\": [\"My {key} is {value}.\"],\n"
               "          \"valid\": [\"Oh, my {key} is {value}.\"],\n"
               "          \"test\": [\"My {key} is {value}, just so you know.\"]},\n"
               " \"update\": {\"train\": [\"Now my {key} is {value}.\"],\n"
               "            \"valid\": [\"Now my {key} is {value} lol\"],\n"
               "            \"test\": [\"Actually, now my {key} is {value}.\"]},\n"
               " \"question\": {\"train\": [\"What is your {key}?\"],\n"
               "              \"valid\": [\"Do you remember what your {key} is?\"],\n"
               "              \"test\": [\"Quick question: what is your {key}?\"]},\n"
               " \"values\": {\"train\": [\"Alpha\", \"Bravo\", \"Charlie\", \"Delta\", \"Kilo\", \"Lima\"],\n"
               "            \"valid\": [\"Echo\", \"Foxtrot\"], \"test\": [\"Golf\", \"Hotel\"]}}\n");
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_OK);
    assert_int_equal((int)t.heldout_phrasings.count, 6);
    static const mn_distance_range dist[] = {{1, 4}};
    mn_dialogue_list eps = build_episodes(600, 12, 2);
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 1;
    pc.probes_per_episode = 2;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.update_prob = 0.5;
    pc.variety_prob = 1.0;
    pc.seed = 4;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_true(stats.probes >= 500);
    /* fact, update and question texts, letters and digits only, with the key and value named */
    static const char *const heldout[] = {"oh my key is value", "my key is value just so you know",
                                          "now my key is value lol", "actually now my key is value",
                                          "do you remember what your key is", "quick question what is your key"};
    int varied = 0;
    for (int64_t e = 0; e < eps.count; e++) {
        const mn_dialogue *ep = &eps.items[e];
        const char *texts[64];
        int n = 0;
        for (int i = 0; i < ep->n_turns && n < 60; i++) {
            int d, tt, len = 0;
            if (sscanf(ep->turns[i].text, "d%d t%d%n", &d, &tt, &len) != 2 || ep->turns[i].text[len])
                texts[n++] = ep->turns[i].text; /* not an original turn */
        }
        for (int p = 0; p < ep->n_probes && n < 64; p++)
            texts[n++] = ep->probes[p].question;
        for (int i = 0; i < n; i++) {
            char norm[512];
            size_t k = 0;
            int gap = 0;
            for (const char *s = texts[i]; *s && k + 8 < sizeof norm; s++) {
                if (!isalnum((unsigned char)*s)) {
                    gap = 1;
                    continue;
                }
                if (gap && k)
                    norm[k++] = ' ';
                gap = 0;
                norm[k++] = (char)tolower((unsigned char)*s);
            }
            norm[k] = '\0';
            /* the key and the value back to their placeholders' words */
            static const char *const keys[] = {"zoo pass", "boat pin", "attic lamp"};
            static const char *const values[] = {"alpha", "bravo", "charlie", "delta", "kilo", "lima"};
            char generic[512];
            snprintf(generic, sizeof generic, "%s", norm);
            for (int r = 0; r < 9; r++) {
                const char *from = r < 3 ? keys[r] : values[r - 3], *to = r < 3 ? "key" : "value";
                char *at = strstr(generic, from);
                if (at) {
                    char tmp[512];
                    snprintf(tmp, sizeof tmp, "%.*s%s%s", (int)(at - generic), generic, to, at + strlen(from));
                    snprintf(generic, sizeof generic, "%s", tmp);
                }
            }
            for (size_t h = 0; h < sizeof heldout / sizeof heldout[0]; h++)
                if (!strcmp(generic, heldout[h]))
                    fail_msg("\"%s\" is the held-out phrasing \"%s\"", texts[i], heldout[h]);
            varied += strcmp(generic, "my key is value") && strcmp(generic, "now my key is value") &&
                      strcmp(generic, "what is your key");
        }
    }
    /* lower case and punctuation alone do not show here */
    assert_true(varied >= (int)(stats.fact_turns + stats.probes) / 2);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* A copy of data/probes in tmp/<name>, with `from` replaced by `to` in open_frames.json (and
 * nothing replaced when from is NULL). */
static const char *templates_copy(const char *name, const char *from, const char *to) {
    const char *dir = tmp_path(name);
    char cmd[10240], path[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, templates_dir(), dir);
    assert_int_equal(system(cmd), 0);
    if (!from)
        return dir;
    snprintf(path, sizeof path, "%s/open_frames.json", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    char *at = strstr(text, from);
    assert_non_null(at);
    static char out[65536 + 1024];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    write_text(path, out);
    return dir;
}

/* The loader refuses open frames that would carry held-out material into training, on every
 * load (whatever the split), naming the file and what it found. */
static void test_open_frames_errors(void **state) {
    (void)state;
    mn_probe_templates t;
    const char *dir = templates_copy("frames_ok", NULL, NULL);
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_OK);
    assert_non_null(t.open_frames);
    mn_probe_templates_free(&t);
    /* a question frame equal to a test phrasing of a held-out family, case and punctuation
     * aside */
    dir = templates_copy("frames_test_q", "\"What's your {key}?\"",
                         "\"where do you keep your {key}\"");
    for (int s = 0; s < 3; s++) {
        mn_split split = (mn_split)(MN_SPLIT_TRAIN + s);
        assert_int_equal(mn_probe_templates_load(dir, split, &t), MN_ERR_FORMAT);
        assert_non_null(strstr(mn_last_error(), "open_frames.json"));
        assert_non_null(strstr(mn_last_error(), "where do you keep your {key}"));
        assert_non_null(strstr(mn_last_error(), "test split"));
    }
    /* a fact frame equal to a valid phrasing of a shared family */
    dir = templates_copy("frames_valid_f", "\"My {key} is {value}.\"",
                         "\"Just so you know, my {key} is {value}.\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "open_frames.json"));
    assert_non_null(strstr(mn_last_error(), "valid split"));
    /* a key word of a held-out family's key, even as a plural */
    dir = templates_copy("frames_key_word", "\"locker\"", "\"passports\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "open_frames.json"));
    assert_non_null(strstr(mn_last_error(), "\"passports\""));
    assert_non_null(strstr(mn_last_error(), "storage"));
    dir = templates_copy("frames_kind_word", "\"nickname\"", "\"side gig\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TEST, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "kind_words.name"));
    /* a value word that is a word of a test value */
    dir = templates_copy("frames_value_word", "\"kettle\"", "\"pretzel\"");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "\"pretzel\""));
    assert_non_null(strstr(mn_last_error(), "Pretzel"));
    /* frames that are not train material, and a second frames file */
    dir = templates_copy("frames_split", "\"update\": {", "\"update\": {\"test\": [\"X {key} {value}\"],");
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "update.test"));
    dir = templates_copy("frames_twice", NULL, NULL);
    char cmd[1536];
    snprintf(cmd, sizeof cmd, "cp '%s/open_frames.json' '%s/zz_more_frames.json'", dir, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "second file"));
}

/* --askers self: the same episode as with other askers (same seed: facts, answers, choices,
 * distances), but the fact's own speaker asks with a first-person question; --askers both
 * mixes the two per probe, deterministically. */
static void test_askers(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &t), MN_OK);
    static const mn_distance_range dist[] = {{1, 8}, {9, 64}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 2;
    pc.probes_per_episode = 6;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.update_prob = 0.3;
    pc.interference = 1;
    pc.seed = 31;
    mn_dialogue_list runs[4];
    const int askers[4] = {MN_ASKERS_OTHER, MN_ASKERS_SELF, MN_ASKERS_BOTH, MN_ASKERS_BOTH};
    for (int r = 0; r < 4; r++) {
        runs[r] = build_episodes(300, 128, 5);
        pc.askers = askers[r];
        mn_probe_stats stats = {0};
        assert_int_equal(mn_probes_inject_all(&runs[r], &t, NULL, &pc, &stats), MN_OK);
        assert_true(stats.probes >= 150);
    }
    const mn_dialogue_list *other = &runs[0], *self = &runs[1];
    for (int64_t e = 0; e < other->count; e++) {
        const mn_dialogue *eo = &other->items[e], *es = &self->items[e];
        assert_int_equal(eo->n_turns, es->n_turns);
        for (int i = 0; i < eo->n_turns; i++)
            assert_string_equal(eo->turns[i].text, es->turns[i].text);
        assert_int_equal(eo->n_probes, es->n_probes);
        for (int p = 0; p < eo->n_probes; p++) {
            const mn_probe *o = &eo->probes[p], *s = &es->probes[p];
            assert_int_equal(o->after, s->after);
            assert_int_equal(o->evidence[0], s->evidence[0]);
            assert_string_equal(o->answer, s->answer);
            assert_int_equal(o->n_choices, s->n_choices);
            for (int c = 0; c < o->n_choices; c++)
                assert_string_equal(o->choices[c], s->choices[c]);
            const char *teller = es->turns[s->evidence[0]].speaker;
            assert_string_equal(s->speaker, teller);
            assert_true(strcmp(o->speaker, teller) != 0);
            /* the self question is a first-person phrasing naming the fact's key, never one
             * of the other speaker's questions */
            const char *key = NULL, *other_key = NULL;
            for (int c = 0; c < t.n_categories && !key; c++) {
                const mn_fact_category *cat = &t.categories[c];
                if (!in_list(cat->values, cat->n_values, s->answer))
                    continue;
                key = key_in(cat, cat->self_questions, cat->n_self_questions, s->question);
                other_key = key_of_question(cat, s->question);
            }
            assert_non_null(key);
            assert_null(other_key);
            assert_non_null(strstr(es->turns[s->evidence[0]].text, key));
        }
    }
    /* both: deterministic, a mix of the two, each probe consistent */
    char *a = serialize(&runs[2]), *b = serialize(&runs[3]);
    assert_string_equal(a, b);
    free(a);
    free(b);
    int n_self = 0, n_other = 0;
    for (int64_t e = 0; e < runs[2].count; e++) {
        const mn_dialogue *ep = &runs[2].items[e];
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            int asks_self = !strcmp(q->speaker, ep->turns[q->evidence[0]].speaker);
            int self_phrasing = 0;
            for (int c = 0; c < t.n_categories; c++)
                self_phrasing |= key_in(&t.categories[c], t.categories[c].self_questions,
                                        t.categories[c].n_self_questions, q->question) != NULL;
            assert_int_equal(asks_self, self_phrasing);
            n_self += asks_self;
            n_other += !asks_self;
        }
    }
    assert_true(n_self > n_other / 2 && n_other > n_self / 2);
    for (int r = 0; r < 4; r++)
        mn_dialogue_list_free(&runs[r]);
    mn_probe_templates_free(&t);

    /* a category without self questions cannot be asked by its own speaker */
    char text[2048];
    snprintf(text, sizeof text, good_category, "\"Kim\", \"Lou\"");
    write_text(tmp_path("noself.json"), text);
    assert_int_equal(mn_probe_templates_load(tmp_path("noself.json"), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(10, 40, 1);
    mn_probe_stats stats = {0};
    pc.update_prob = 0;
    pc.interference = 0;
    pc.probes_per_episode = 1;
    pc.askers = MN_ASKERS_SELF;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "pets"));
    pc.askers = MN_ASKERS_OTHER;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* --alive N: the N facts of a group belong to different categories and are all said before
 * the first of the group's questions. */
static void test_alive(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &t), MN_OK);
    static const mn_distance_range dist[] = {{1, 64}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 1;
    pc.probes_per_episode = 4;
    pc.alive = 4;
    pc.sources = MN_FACTS_TEMPLATES;
    pc.update_prob = 0.2;
    mn_dialogue_list eps = build_episodes(120, 80, 8);
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_true(stats.probes >= 4 * (eps.count - 1) - 4);
    int short_ones = 0;
    for (int64_t e = 0; e < eps.count; e++) {
        const mn_dialogue *ep = &eps.items[e];
        int last_fact = -1, first_question = 1 << 30;
        int cats[4], n = 0;
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            assert_in_range(distance_of(q), 1, 64);
            short_ones += distance_of(q) <= 2;
            if (q->evidence[0] > last_fact)
                last_fact = q->evidence[0];
            if (q->after < first_question)
                first_question = q->after;
            int c = -1;
            for (int k = 0; k < t.n_categories && c < 0; k++)
                if (key_of_question(&t.categories[k], q->question))
                    c = k;
            assert_true(c >= 0);
            for (int i = 0; i < n; i++)
                assert_int_not_equal(cats[i], c);
            cats[n++] = c;
        }
        /* the question asked after `after` turns comes after every fact of the group */
        if (ep->n_probes)
            assert_true(last_fact < first_question);
    }
    assert_true(short_ones > 0);
    assert_roundtrip_valid(&eps);
    /* groups are of template facts, of 2 or more */
    pc.sources = MN_FACTS_BOTH;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_ERR_CONFIG);
    pc.sources = MN_FACTS_TEMPLATES;
    pc.alive = 1;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_ERR_CONFIG);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* --alive N --alive-same-kind: the N facts of a group are of one category with N different
 * keys and values, all said before the first question, each asked; a probe's choices hold the
 * group's other values (so only the key in the question picks the answer). */
static void test_alive_same_kind(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &t), MN_OK);
    static const mn_distance_range dist[] = {{1, 16}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 1;
    pc.probes_per_episode = 3;
    pc.alive = 3;
    pc.alive_same_kind = 1;
    pc.sources = MN_FACTS_TEMPLATES;
    mn_dialogue_list eps = build_episodes(120, 40, 9);
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_OK);
    assert_true(stats.probes >= 3 * (eps.count - 1) - 3);
    int full_groups = 0;
    for (int64_t e = 0; e < eps.count; e++) {
        const mn_dialogue *ep = &eps.items[e];
        int last_fact = -1, first_question = 1 << 30, cat = -1;
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            last_fact = q->evidence[0] > last_fact ? q->evidence[0] : last_fact;
            first_question = q->after < first_question ? q->after : first_question;
            int c = -1;
            for (int k = 0; k < t.n_categories && c < 0; k++)
                if (key_of_question(&t.categories[k], q->question))
                    c = k;
            assert_true(c >= 0);
            if (cat < 0)
                cat = c;
            assert_int_equal(c, cat);
            for (int o = 0; o < ep->n_probes; o++) {
                if (o == p)
                    continue;
                /* another key, another value, and that value among the choices */
                assert_string_not_equal(key_of_question(&t.categories[c], ep->probes[o].question),
                                        key_of_question(&t.categories[c], q->question));
                assert_string_not_equal(ep->probes[o].answer, q->answer);
                int offered = 0;
                for (int i = 0; i < q->n_choices; i++)
                    offered |= !strcmp(q->choices[i], ep->probes[o].answer);
                assert_true(offered);
            }
        }
        if (ep->n_probes)
            assert_true(last_fact < first_question);
        full_groups += ep->n_probes == 3;
    }
    assert_true(full_groups >= eps.count / 2);
    assert_roundtrip_valid(&eps);
    /* one kind needs groups, and is its own interference */
    pc.alive = 0;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_ERR_CONFIG);
    pc.alive = 3;
    pc.interference = 1;
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_ERR_CONFIG);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
}

/* ------------------------------------------------------------------ personas */

/* "I like dogs." is in train and (spelled differently) in test: it must vanish from both. */
static const char *persona_fixture =
    "{\"train\": ["
    "  {\"Speaker 1\": [\"I like dogs.\", \"I am a chef.\", \"I live by the sea.\"],"
    "   \"Speaker 2\": [\"I play chess.\", \"I have three sisters.\", \"I like dogs.\"]},"
    "  {\"Speaker 1\": [\"I drive a red truck.\", \"I collect stamps.\"],"
    "   \"Speaker 2\": [\"I am a nurse.\", \"I love jazz.\", \"I run marathons.\"]},"
    "  {\"Speaker 1\": [\"I grow tomatoes.\", \"I hate mornings.\"],"
    "   \"Speaker 2\": [\"I speak French.\", \"I knit scarves.\"]}],"
    " \"valid\": [{\"Speaker 1\": [\"I fly kites.\"], \"Speaker 2\": [\"I bake bread.\"]}],"
    " \"test\": ["
    "  {\"Speaker 1\": [\"i like  DOGS\", \"I paint murals.\", \"I own a boat.\"],"
    "   \"Speaker 2\": [\"I teach math.\", \"I climb rocks.\", \"I paint murals.\"]},"
    "  {\"Speaker 1\": [\"I write poems.\", \"I keep bees.\"],"
    "   \"Speaker 2\": [\"I surf.\", \"I sing opera.\"]}]}";

static void assert_no_sentence_of(const mn_dialogue_list *eps, const mn_persona_bank *other) {
    for (int64_t e = 0; e < eps->count; e++) {
        const mn_dialogue *ep = &eps->items[e];
        for (int t = 0; t < ep->n_turns; t++)
            assert_false(in_list(other->sentences, other->n_sentences, ep->turns[t].text));
        for (int p = 0; p < ep->n_probes; p++)
            for (int c = 0; c < ep->probes[p].n_choices; c++)
                assert_false(in_list(other->sentences, other->n_sentences,
                                     ep->probes[p].choices[c]));
    }
}

/* self: the speaker of the sentence asks for it back; else the other speaker asks. */
static void check_persona_probes(const mn_dialogue_list *eps, const mn_persona_bank *bank,
                                 int k, int self) {
    int64_t n = 0;
    for (int64_t e = 0; e < eps->count; e++) {
        const mn_dialogue *ep = &eps->items[e];
        for (int p = 0; p < ep->n_probes; p++) {
            const mn_probe *q = &ep->probes[p];
            if (!in_list(bank->sentences, bank->n_sentences, q->answer))
                continue; /* a template probe */
            n++;
            /* the persona sentence is the fact turn, verbatim */
            assert_string_equal(ep->turns[q->evidence[0]].text, q->answer);
            assert_int_equal(strcmp(q->speaker, ep->turns[q->evidence[0]].speaker) == 0, self);
            assert_in_range(q->n_choices, 2, k + 1);
            int has = 0;
            for (int c = 0; c < q->n_choices; c++) {
                has += !strcmp(q->choices[c], q->answer);
                assert_true(in_list(bank->sentences, bank->n_sentences, q->choices[c]));
                if (strcmp(q->choices[c], q->answer) == 0)
                    continue;
                /* a distractor was never said in the episode: the answer is unambiguous */
                for (int t = 0; t < ep->n_turns; t++)
                    assert_true(strcmp(ep->turns[t].text, q->choices[c]) != 0);
            }
            assert_int_equal(has, 1);
            /* nor from the persona the answer was drawn from (true of the speaker, if
             * unsaid): some persona holding the answer shares no sentence with the choices */
            int clean_persona = 0;
            for (int p2 = 0; p2 < bank->n_personas && !clean_persona; p2++) {
                int holds = 0, shares = 0;
                for (int i = bank->persona_start[p2]; i < bank->persona_start[p2 + 1]; i++) {
                    const char *s = bank->sentences[bank->persona_sentences[i]];
                    holds |= !strcmp(s, q->answer);
                    for (int c = 0; c < q->n_choices; c++)
                        shares |= strcmp(q->choices[c], q->answer) && !strcmp(s, q->choices[c]);
                }
                clean_persona = holds && !shares;
            }
            assert_true(clean_persona);
        }
    }
    assert_true(n > 0);
}

static void test_persona_split_fixture(void **state) {
    (void)state;
    const char *path = tmp_path("personas.json");
    write_text(path, persona_fixture);
    mn_persona_bank train, test;
    assert_int_equal(mn_persona_bank_load(path, MN_SPLIT_TRAIN, &train), MN_OK);
    assert_int_equal(mn_persona_bank_load(path, MN_SPLIT_TEST, &test), MN_OK);
    assert_false(in_list(train.sentences, train.n_sentences, "I like dogs."));
    assert_false(in_list(test.sentences, test.n_sentences, "i like  DOGS"));
    assert_int_equal(train.dropped_shared, 2);
    assert_int_equal(train.n_sentences, 13);
    assert_int_equal(train.n_personas, 6);
    assert_int_equal(test.n_sentences, 8); /* "I paint murals." merged */
    assert_int_equal(test.n_personas, 4);

    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(40, 80, 6);
    static const mn_distance_range dist[] = {{2, 2}, {20, 20}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 2;
    pc.probes_per_episode = 2; /* leaves the small bank room for 3 distractors */
    pc.sources = MN_FACTS_PERSONAS;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, &train, &pc, &stats), MN_OK);
    assert_int_equal(stats.persona_probes, stats.probes);
    assert_true(stats.probes > 0);
    check_persona_probes(&eps, &train, 3, 0);
    assert_no_sentence_of(&eps, &test);
    assert_roundtrip_valid(&eps);
    /* asked back by the speaker who said it, with a first-person question */
    mn_dialogue_list self_eps = build_episodes(40, 80, 6);
    pc.askers = MN_ASKERS_SELF;
    assert_int_equal(mn_probes_inject_all(&self_eps, &t, &train, &pc, &stats), MN_OK);
    check_persona_probes(&self_eps, &train, 3, 1);
    for (int64_t e = 0; e < self_eps.count; e++)
        for (int p = 0; p < self_eps.items[e].n_probes; p++)
            assert_true(in_list(t.persona_self_questions, t.n_persona_self_questions,
                                self_eps.items[e].probes[p].question));
    mn_dialogue_list_free(&self_eps);
    pc.askers = MN_ASKERS_OTHER;
    /* a test-split bank with train templates is a configuration error */
    assert_int_equal(mn_probes_inject_all(&eps, &t, &test, &pc, &stats), MN_ERR_CONFIG);
    /* persona facts without a bank, templates without categories */
    assert_int_equal(mn_probes_inject_all(&eps, &t, NULL, &pc, &stats), MN_ERR_CONFIG);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
    mn_persona_bank_free(&train);
    mn_persona_bank_free(&test);
    write_text(path, "{\"train\": [{\"Speaker 1\": [3]}], \"valid\": [], \"test\": []}");
    assert_int_equal(mn_persona_bank_load(path, MN_SPLIT_TRAIN, &train), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "train[0]"));
}

static void test_persona_split_msc(void **state) {
    (void)state;
    char path[4096];
    const char *data = getenv("MNEMO_DATA");
    snprintf(path, sizeof path, "%s/locomo/msc_personas_all.json", data ? data : "../shared/data");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        printf("skipping: %s not found (MSC personas ship with LoCoMo)\n", path);
        skip();
    }
    mn_persona_bank banks[3];
    mn_split splits[3] = {MN_SPLIT_TRAIN, MN_SPLIT_VALID, MN_SPLIT_TEST};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mn_persona_bank_load(path, splits[i], &banks[i]), MN_OK);
        assert_true(banks[i].n_sentences > 100);
    }
    /* the real file shares ~120 sentences between train and test; none may survive */
    assert_true(banks[0].dropped_shared > 0);
    for (int i = 0; i < banks[2].n_sentences; i++)
        assert_false(in_list(banks[0].sentences, banks[0].n_sentences, banks[2].sentences[i]));
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    mn_dialogue_list eps = build_episodes(150, 150, 8);
    mn_probe_config pc = mn_probe_config_default();
    pc.sources = MN_FACTS_BOTH;
    pc.update_prob = 0.3;
    pc.interference = 1;
    mn_probe_stats stats = {0};
    assert_int_equal(mn_probes_inject_all(&eps, &t, &banks[0], &pc, &stats), MN_OK);
    assert_true(stats.persona_probes > 0 && stats.template_probes > 0);
    check_persona_probes(&eps, &banks[0], 3, 0);
    assert_no_sentence_of(&eps, &banks[2]);
    assert_no_sentence_of(&eps, &banks[1]);
    assert_roundtrip_valid(&eps);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&t);
    for (int i = 0; i < 3; i++)
        mn_persona_bank_free(&banks[i]);
}

/* ------------------------------------------------------------------ synthetic + CLI */

static void test_synthetic(void **state) {
    (void)state;
    mn_probe_templates t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    static const mn_distance_range dist[] = {{1, 1}, {4, 4}, {16, 16}};
    mn_probe_config pc = mn_probe_config_default();
    pc.distances = dist;
    pc.n_distances = 3;
    pc.probes_per_episode = 3;
    pc.sources = MN_FACTS_BOTH; /* taken as templates: no personas needed */
    mn_dialogue_list out = {0}, again = {0};
    mn_probe_stats stats = {0}, stats2 = {0};
    assert_int_equal(mn_probes_synthetic(NULL, 10, 40, &t, &pc, &out, &stats), MN_OK);
    assert_int_equal(out.count, 10);
    assert_int_equal(stats.probes, 30);
    for (int64_t e = 0; e < out.count; e++) {
        const mn_dialogue *ep = &out.items[e];
        assert_int_equal(ep->n_turns, 40);
        assert_int_equal(ep->n_probes, 3);
        assert_int_equal(ep->turns[0].session, 1);
        assert_int_equal(ep->turns[39].session, 4);
        for (int p = 0; p < 3; p++) {
            const mn_probe *q = &ep->probes[p];
            int d = distance_of(q);
            assert_true(d == 1 || d == 4 || d == 16);
            assert_non_null(strstr(ep->turns[q->evidence[0]].text, q->answer));
        }
    }
    assert_roundtrip_valid(&out);
    assert_int_equal(mn_probes_synthetic(NULL, 10, 40, &t, &pc, &again, &stats2), MN_OK);
    char *a = serialize(&out), *b = serialize(&again);
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* a given pool supplies the filler */
    mn_dialogue_list pool;
    make_dialogues(&pool, 3, 4, 4);
    mn_dialogue_list from_pool = {0};
    assert_int_equal(mn_probes_synthetic(&pool, 2, 30, &t, &pc, &from_pool, &stats), MN_OK);
    for (int i = 0; i < from_pool.items[0].n_turns; i++) {
        const char *text = from_pool.items[0].turns[i].text;
        int di, ti;
        int is_fact = 0;
        for (int p = 0; p < from_pool.items[0].n_probes; p++)
            is_fact |= from_pool.items[0].probes[p].evidence[0] == i;
        if (!is_fact)
            assert_int_equal(sscanf(text, "d%d t%d", &di, &ti), 2);
    }
    mn_dialogue_list_free(&from_pool);
    mn_dialogue_list_free(&pool);
    mn_dialogue_list_free(&out);
    mn_dialogue_list_free(&again);
    mn_probe_templates_free(&t);
}

static int run_cli(const char *args) {
    const char *bin = getenv("MNEMO_BIN");
    if (!bin)
        return -1;
    char cmd[24576];
    snprintf(cmd, sizeof cmd, "'%s' episodes %s > '%s' 2>&1", bin, args, tmp_path("cli.log"));
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli(void **state) {
    (void)state;
    if (!getenv("MNEMO_BIN"))
        skip();
    mn_dialogue_list dialogues;
    make_dialogues(&dialogues, 50, 6, 20);
    char in[512], out[512], args[16384];
    snprintf(in, sizeof in, "%s", tmp_path("dialogues.jsonl"));
    snprintf(out, sizeof out, "%s", tmp_path("episodes.jsonl"));
    assert_int_equal(mn_jsonl_write_file(in, &dialogues), MN_OK);
    mn_dialogue_list_free(&dialogues);
    snprintf(args, sizeof args,
             "--jsonl '%s' --split valid --turns 100 --distances 1,8,30-40 --facts templates "
             "--templates '%s' --seed 3 --interference 1 --updates 0.5 "
             "--probes-per-episode 5 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    mn_dialogue_list eps = {0};
    mn_read_stats rs = {0};
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    assert_true(eps.count >= 4);
    mn_probe_templates valid;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_VALID, &valid), MN_OK);
    int64_t probes = 0;
    for (int64_t e = 0; e < eps.count; e++) {
        assert_true(eps.items[e].n_turns <= 100);
        for (int p = 0; p < eps.items[e].n_probes; p++) {
            const mn_probe *q = &eps.items[e].probes[p];
            int d = distance_of(q);
            assert_true(d == 1 || d == 8 || (d >= 30 && d <= 40));
            assert_true(category_of_value(&valid, q->answer) >= 0); /* valid values only */
            probes++;
        }
    }
    assert_true(probes >= 4 * 5 - 5);
    mn_dialogue_list_free(&eps);
    mn_probe_templates_free(&valid);
    /* synthetic mode needs no corpus */
    snprintf(args, sizeof args, "--synthetic 4 --turns 50 --templates '%s' -o '%s'",
             templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    assert_int_equal(eps.count, 4);
    mn_dialogue_list_free(&eps);
    /* the held-out families of the test split, asked by the speaker who stated the fact */
    snprintf(args, sizeof args,
             "--jsonl '%s' --split test --turns 60 --distances 1-8 --facts templates "
             "--families held-out --askers self --templates '%s' --seed 4 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    mn_probe_templates test;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TEST, &test), MN_OK);
    probes = 0;
    for (int64_t e = 0; e < eps.count; e++)
        for (int p = 0; p < eps.items[e].n_probes; p++) {
            const mn_probe *q = &eps.items[e].probes[p];
            int c = category_of_value(&test, q->answer);
            assert_true(c >= 0 && test.categories[c].held_out);
            assert_string_equal(q->speaker, eps.items[e].turns[q->evidence[0]].speaker);
            probes++;
        }
    assert_true(probes >= 20);
    mn_probe_templates_free(&test);
    mn_dialogue_list_free(&eps);
    /* train has no held-out family */
    snprintf(args, sizeof args,
             "--jsonl '%s' --split train --facts templates --families held-out --templates '%s' "
             "-o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 1);
    /* usage errors exit 2, a missing input 1 */
    assert_int_equal(run_cli("--askers me -o x.jsonl --synthetic 1"), 2);
    assert_int_equal(run_cli("--families some -o x.jsonl --synthetic 1"), 2);
    assert_int_equal(run_cli("--split dev -o x.jsonl --synthetic 1"), 2);
    assert_int_equal(run_cli("--distances 0 -o x.jsonl --synthetic 1"), 2);
    assert_int_equal(run_cli("--bogus"), 2);
    /* the output is renamed into place: a special file such as /dev/null is refused */
    snprintf(args, sizeof args, "--synthetic 1 --templates '%s' -o /dev/null", templates_dir());
    assert_int_equal(run_cli(args), 2);
    snprintf(args, sizeof args, "--jsonl '%s' --templates '%s' -o '%s' --facts templates",
             tmp_path("nope.jsonl"), templates_dir(), out);
    assert_int_equal(run_cli(args), 1);
    /* --open-values: train split only */
    snprintf(args, sizeof args,
             "--jsonl '%s' --split test --facts templates --templates '%s' --open-values 100 "
             "-o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 1);
    snprintf(args, sizeof args,
             "--jsonl '%s' --split train --turns 10 --distances 1-3 --probes-per-episode 1 "
             "--facts templates --templates '%s' --open-values 1000 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    assert_true(eps.count >= 10);
    mn_probe_templates train;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &train), MN_OK);
    int open_answers = 0;
    for (int64_t e = 0; e < eps.count; e++)
        for (int p = 0; p < eps.items[e].n_probes; p++)
            open_answers += category_of_value(&train, eps.items[e].probes[p].answer) < 0;
    assert_true(open_answers >= eps.count / 2);
    mn_probe_templates_free(&train);
    mn_dialogue_list_free(&eps);
    /* --open-families: train split only; its probes (asked by either speaker) hold the key in
     * the fact and the question, the value in the fact only */
    for (int s = 0; s < 2; s++) {
        snprintf(args, sizeof args,
                 "--jsonl '%s' --split %s --facts templates --templates '%s' --open-families 10 "
                 "-o '%s'",
                 in, s ? "valid" : "test", templates_dir(), out);
        assert_int_equal(run_cli(args), 1);
    }
    snprintf(args, sizeof args,
             "--jsonl '%s' --split train --turns 10 --distances 1-3 --probes-per-episode 1 "
             "--facts templates --templates '%s' --open-values 1000 --open-families 1000 "
             "--askers both --seed 6 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    assert_true(eps.count >= 10);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &train), MN_OK);
    assert_int_equal(mn_probe_templates_open_values(&train, templates_dir(), 1000, 6), MN_OK);
    assert_int_equal(mn_probe_templates_open_families(&train, templates_dir(), 1000, 6), MN_OK);
    assert_true(assert_open_family_probes(&eps, &train) >= eps.count * 8 / 10);
    mn_probe_templates_free(&train);
    mn_dialogue_list_free(&eps);
    /* --embed-facts and --frame-variety: train split only (nothing written otherwise); each
     * changes the output when given */
    const char *fresh = tmp_path("embed_refused.jsonl");
    for (int s = 0; s < 4; s++) {
        snprintf(args, sizeof args,
                 "--jsonl '%s' --split %s --facts templates --templates '%s' %s 0.5 -o '%s'", in,
                 s % 2 ? "valid" : "test", templates_dir(), s < 2 ? "--embed-facts" : "--frame-variety",
                 fresh);
        assert_int_equal(run_cli(args), 1);
        assert_int_equal(access(fresh, F_OK), -1);
    }
    char *outputs[3];
    static const char *const options[3] = {"", "--embed-facts 0.5", "--frame-variety 0.5"};
    for (int o = 0; o < 3; o++) {
        snprintf(args, sizeof args,
                 "--jsonl '%s' --split train --turns 24 --distances 1-8 --probes-per-episode 2 "
                 "--facts templates --askers both --templates '%s' --seed 6 %s -o '%s'",
                 in, templates_dir(), options[o], out);
        assert_int_equal(run_cli(args), 0);
        size_t len;
        assert_int_equal(mn_file_read_all(out, &outputs[o], &len), MN_OK);
    }
    assert_string_not_equal(outputs[0], outputs[1]);
    assert_string_not_equal(outputs[0], outputs[2]);
    for (int o = 0; o < 3; o++)
        free(outputs[o]);
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &train), MN_OK);
    static const mn_distance_range range = {1, 8};
    int real_questions = 0;
    assert_embedded_probes(&eps, &train, &range, &real_questions);
    mn_probe_templates_free(&train);
    mn_dialogue_list_free(&eps);
    assert_int_equal(run_cli("--help"), 0);
}


/* make_span_dialogues written to the temporary file `name` (its path in `in`), with the held-out
 * values they say. */
static void span_dialogues_file(const char *name, char *in, size_t cap, mn_dialogue_list *dialogues,
                                char ***heldout, int *n_heldout) {
    heldout_word_values(heldout, n_heldout);
    make_span_dialogues(dialogues, *heldout, *n_heldout);
    snprintf(in, cap, "%s", tmp_path(name));
    assert_int_equal(mn_jsonl_write_file(in, dialogues), MN_OK);
}

/* mnemo episodes --span-families: at 0 the output is byte-identical to the one without the
 * option; at 1 the answers of open families are spans of the --jsonl turns; refused without
 * --open-families or --jsonl, or for a held-out split, writing nothing. */
static void test_cli_span_families(void **state) {
    (void)state;
    if (!getenv("MNEMO_BIN"))
        skip();
    char **heldout;
    int n_heldout;
    mn_dialogue_list dialogues;
    char in[512], out[512], args[16384];
    span_dialogues_file("real.jsonl", in, sizeof in, &dialogues, &heldout, &n_heldout);
    snprintf(out, sizeof out, "%s", tmp_path("spans.jsonl"));
    const char *common = "--split train --turns 8 --distances 1-3 --probes-per-episode 2 --facts templates "
                         "--askers both --open-families 300 --seed 6";
    char *outputs[2];
    static const char *const chance_zero[2] = {"", "--span-families 0"};
    for (int o = 0; o < 2; o++) {
        snprintf(args, sizeof args, "--jsonl '%s' --templates '%s' %s %s -o '%s'", in, templates_dir(), common,
                 chance_zero[o], out);
        assert_int_equal(run_cli(args), 0);
        size_t len;
        assert_int_equal(mn_file_read_all(out, &outputs[o], &len), MN_OK);
    }
    assert_string_equal(outputs[0], outputs[1]);
    free(outputs[0]);
    free(outputs[1]);

    snprintf(args, sizeof args, "--jsonl '%s' --templates '%s' %s --span-families 1 -o '%s'", in, templates_dir(),
             common, out);
    assert_int_equal(run_cli(args), 0);
    char *log;
    size_t log_len;
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "span families (train): 300 of the open families"))
        fail_msg("no span family count in:\n%s", log);
    free(log);
    mn_dialogue_list eps = {0};
    mn_read_stats rs = {0};
    assert_int_equal(mn_jsonl_read(out, 1, stderr, &eps, &rs), MN_OK);
    mn_probe_templates train;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &train), MN_OK);
    int spans = 0, probes = 0;
    for (int64_t e = 0; e < eps.count; e++)
        for (int p = 0; p < eps.items[e].n_probes; p++, probes++) {
            const mn_probe *q = &eps.items[e].probes[p];
            if (category_of_value(&train, q->answer) >= 0)
                continue; /* a loaded family's */
            assert_span_value(q->answer, &dialogues, heldout, n_heldout);
            for (int i = 0; i < q->n_choices; i++)
                assert_span_value(q->choices[i], &dialogues, heldout, n_heldout);
            spans++;
        }
    assert_true(probes >= 40);
    assert_true(spans >= probes * 8 / 10);
    mn_probe_templates_free(&train);
    mn_dialogue_list_free(&eps);

    /* refused, nothing written: a held-out split, no --open-families, no --jsonl */
    const char *fresh = tmp_path("spans_refused.jsonl");
    static const char *const refused[3] = {
        "--jsonl '%s' --split valid --facts templates --templates '%s' --open-families 10 --span-families 0.5 -o '%s'",
        "--jsonl '%s' --split train --facts templates --templates '%s' --span-families 0.5 -o '%s'",
        "--synthetic 2 --turns 20 --split train --templates '%s' --open-families 10 --span-families 0.5 -o '%s'",
    };
    for (int r = 0; r < 3; r++) {
        if (r < 2)
            snprintf(args, sizeof args, refused[r], in, templates_dir(), fresh);
        else
            snprintf(args, sizeof args, refused[r], templates_dir(), fresh);
        assert_int_equal(run_cli(args), 1);
        assert_int_equal(access(fresh, F_OK), -1);
        assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
        if (!strstr(log, r == 0 ? "train split" : r == 1 ? "--open-families" : "--jsonl"))
            fail_msg("refusal %d does not say why:\n%s", r, log);
        free(log);
    }
    snprintf(args, sizeof args, "--synthetic 2 --templates '%s' --span-families 1.5 -o '%s'", templates_dir(), fresh);
    assert_int_equal(run_cli(args), 2);
    mn_dialogue_list_free(&dialogues);
    free_list(heldout, n_heldout);
}

/* The words of a mn_text_norm'd phrasing's runs of four that hold "key" or "value", added to set. */
static void add_runs_of_four(mn_strset *set, const char *norm) {
    const char *w[64];
    int n = 0;
    for (const char *p = norm; *p && n < 64; p += strspn(p, " ")) {
        w[n++] = p;
        p += strcspn(p, " ");
    }
    for (int i = 0; i + 4 <= n; i++) {
        char run[256];
        const char *end = w[i + 3] + strcspn(w[i + 3], " ");
        snprintf(run, sizeof run, "%.*s", (int)(end - w[i]), w[i]);
        if (strstr(run, "key") || strstr(run, "value")) {
            int added;
            assert_int_equal(mn_strset_add(set, run, &added), MN_OK);
        }
    }
}

/* A composed frame: well formed for its role, none of the lists' frames, and clear of the
 * held-out phrasings (not one of them, no run of four words around {key} or {value} in common
 * with one); counted in `distinct`. */
static void check_composed(const mn_probe_templates *t, const mn_strset *heldout_runs, char **list,
                           int n_list, const char *frame, int fact, mn_strset *distinct) {
    if (!strstr(frame, "{key}") || (fact != (strstr(frame, "{value}") != NULL)))
        fail_msg("composed %s \"%s\" lacks {key}, or has {value} wrongly", fact ? "fact" : "question", frame);
    for (int i = 0; i < n_list; i++)
        if (!strcmp(list[i], frame))
            fail_msg("\"%s\" is a frame of the lists, not a composed one", frame);
    char *norm = mn_text_norm(frame);
    assert_non_null(norm);
    if (mn_strset_has(&t->heldout_phrasings, norm))
        fail_msg("composed frame \"%s\" is a held-out phrasing", frame);
    mn_strset mine = {0};
    add_runs_of_four(&mine, norm);
    for (size_t i = 0; i < mine.cap; i++)
        if (mine.slots[i] && mn_strset_has(heldout_runs, mine.slots[i]))
            fail_msg("composed frame \"%s\" shares \"%s\" with a held-out phrasing", frame, mine.slots[i]);
    mn_strset_free(&mine);
    int added;
    assert_int_equal(mn_strset_add(distinct, frame, &added), MN_OK);
    free(norm);
}

/* --composed-frames: with chance 1 every open family's facts, questions and self questions are
 * frames of the grammar (many distinct ones, none of the lists', none near a valid or test
 * phrasing) while its keys are those it has without them; the pattern "{Prep} my {key}
 * {there} {value}" renders "on my {key} there's" but never "in my {key} there", which is a
 * valid phrasing's ("In my {key} there's {value}, and it's thriving."); chance 0 changes
 * nothing, 0.5 about half the families; refused outside [0, 1]. */
static void test_composed_frames(void **state) {
    (void)state;
    mn_probe_templates plain, t;
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &plain), MN_OK);
    assert_int_equal(mn_probe_templates_load(templates_dir(), MN_SPLIT_TRAIN, &t), MN_OK);
    const mn_open_frames *of = t.open_frames;
    assert_non_null(of->grammar);
    const int loaded = t.n_categories;
    assert_int_equal(mn_probe_templates_open_families(&plain, templates_dir(), 200, 5), MN_OK);
    mn_open_spans all = {.composed_prob = 1};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 200, 5, &all), MN_OK);
    assert_int_equal(all.composed_families, 200);
    mn_strset heldout_runs = {0}, facts = {0}, questions = {0};
    for (size_t i = 0; i < t.heldout_phrasings.cap; i++)
        if (t.heldout_phrasings.slots[i])
            add_runs_of_four(&heldout_runs, t.heldout_phrasings.slots[i]);
    assert_true(heldout_runs.count > 50);
    for (int c = loaded; c < t.n_categories; c++) {
        const mn_fact_category *cat = &t.categories[c], *was = &plain.categories[c];
        assert_int_equal(cat->n_keys, was->n_keys);
        for (int k = 0; k < cat->n_keys; k++)
            assert_string_equal(cat->keys[k], was->keys[k]);
        assert_in_range(cat->n_facts, 3, 6);
        assert_in_range(cat->n_questions, 2, 4);
        assert_in_range(cat->n_self_questions, 2, 4);
        for (int i = 0; i < cat->n_facts; i++)
            check_composed(&t, &heldout_runs, of->facts, of->n_facts, cat->facts[i], 1, &facts);
        for (int i = 0; i < cat->n_questions; i++) {
            check_composed(&t, &heldout_runs, of->questions, of->n_questions, cat->questions[i], 0, &questions);
            assert_non_null(strstr(cat->questions[i], "your {key}"));
        }
        for (int i = 0; i < cat->n_self_questions; i++) {
            check_composed(&t, &heldout_runs, of->self_questions, of->n_self_questions, cat->self_questions[i], 0,
                           &questions);
            assert_non_null(strstr(cat->self_questions[i], "my {key}"));
        }
        assert_true(cat->n_values >= 2);
    }
    assert_true(facts.count >= 600); /* of about 900 drawn: constructions, not a list */
    assert_true(questions.count >= 400);

    /* the held-out rule at work on one pattern, with the real valid phrasings */
    mn_rng rng;
    mn_rng_seed(&rng, 9);
    int on_there = 0;
    for (int i = 0; i < 20000; i++) {
        char *frame = NULL;
        assert_int_equal(mn_frame_grammar_compose(of->grammar, MN_GRAMMAR_FACT, &rng, &frame), MN_OK);
        if (!frame)
            continue;
        char *norm = mn_text_norm(frame);
        assert_non_null(norm);
        if (strstr(norm, "in my key there"))
            fail_msg("\"%s\" says a valid phrasing's construction", frame);
        on_there += strstr(norm, "on my key there") != NULL;
        free(norm);
        free(frame);
    }
    assert_true(on_there > 0);
    mn_strset_free(&heldout_runs);
    mn_strset_free(&facts);
    mn_strset_free(&questions);

    assert_chance_zero_and_half((mn_open_spans){.composed_prob = 0},
                                (mn_open_spans){.composed_prob = 0.5},
                                offsetof(mn_open_spans, composed_families));
    mn_open_spans too_likely = {.composed_prob = 1.5};
    assert_int_equal(mn_probe_templates_open_families_spans(&t, templates_dir(), 10, 5, &too_likely),
                     MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "composed frames"));
    assert_int_equal(t.n_categories, loaded + 200);
    mn_probe_templates_free(&t);
    mn_probe_templates_free(&plain);
}

/* The grammar is refused, naming the file and the entry, when an entry holds a word of a valid
 * or test phrasing, a pattern an unknown placeholder or the answer in a question, a verb is not
 * "base|past|ing|preps", or a list other than tails and prefixes holds "". */
static void test_composed_grammar_errors(void **state) {
    (void)state;
    static const struct {
        const char *from, *to, *says;
    } cases[] = {
        {"\"stash|stashed|stashing|in,under,behind\"", "\"grow|grew|growing|in\"", "has the word \"grow\""},
        {"\"My {key} {hold} {value}{tail}.\"", "\"My {key} {colour} {value}.\"", "unknown placeholder {colour}"},
        {"\"What does your {key} {have}?\"", "\"What does your {key} {have}, {value}?\"", "gives the answer away"},
        {"\"What does your {key} {have}?\"", "\"What does your {have}?\"", "has no {key}"},
        {"\"My {key} {hold} {value}{tail}.\"", "\"My {key} {hold}{tail}.\"", "has no {value}"},
        {"\"stash|stashed|stashing|in,under,behind\"", "\"stash|stashed|in\"", "base|past|ing"},
        {"\"stash|stashed|stashing|in,under,behind\"", "\"stash|stashed|stashing|in,,behind\"", "empty"},
        {"\"goes\"", "\"\"", "composed.moves[0]' is empty"},
        {"\"facts\": [", "\"facts\": 3, \"x\": [", "composed.facts' must be a non-empty array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "grammar_%zu", i);
        const char *dir = templates_copy(name, cases[i].from, cases[i].to);
        mn_probe_templates t;
        assert_int_equal(mn_probe_templates_load(dir, MN_SPLIT_TRAIN, &t), MN_ERR_FORMAT);
        if (!strstr(mn_last_error(), "open_frames.json") || !strstr(mn_last_error(), cases[i].says))
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, mn_last_error(), cases[i].says);
    }
}

/* mnemo episodes --word-families, --word-keys, --shared-heads and --composed-frames: report the families made, refuse without
 * --open-families (nothing written) and a chance outside [0, 1]. */
static void test_cli_word_families(void **state) {
    (void)state;
    if (!getenv("MNEMO_BIN"))
        skip();
    char **heldout;
    int n_heldout;
    mn_dialogue_list dialogues;
    char in[512], out[512], args[16384];
    span_dialogues_file("real_words.jsonl", in, sizeof in, &dialogues, &heldout, &n_heldout);
    snprintf(out, sizeof out, "%s", tmp_path("words.jsonl"));
    snprintf(args, sizeof args,
             "--jsonl '%s' --templates '%s' --split train --turns 8 --distances 1-3 --probes-per-episode 2 "
             "--facts templates --open-families 300 --word-families 1 --word-keys 1 --seed 6 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    char *log;
    size_t log_len;
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "word families (train): 300 of the open families"))
        fail_msg("no word family count in:\n%s", log);
    if (!strstr(log, "word keys (train): 300 of the open families"))
        fail_msg("no word key count in:\n%s", log);
    free(log);
    snprintf(args, sizeof args,
             "--jsonl '%s' --templates '%s' --split train --turns 8 --distances 1-3 --probes-per-episode 2 "
             "--facts templates --open-families 300 --shared-heads 1 --seed 6 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "shared heads (train): 300 of the open families"))
        fail_msg("no shared head count in:\n%s", log);
    free(log);
    snprintf(args, sizeof args,
             "--jsonl '%s' --templates '%s' --split train --turns 8 --distances 1-3 --probes-per-episode 2 "
             "--facts templates --open-families 300 --composed-frames 1 --seed 6 -o '%s'",
             in, templates_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "composed frames (train): 300 of the open families"))
        fail_msg("no composed frames count in:\n%s", log);
    free(log);
    const char *fresh = tmp_path("words_refused.jsonl");
    snprintf(args, sizeof args, "--jsonl '%s' --split train --facts templates --templates '%s' --word-families 0.5 -o '%s'",
             in, templates_dir(), fresh);
    assert_int_equal(run_cli(args), 1);
    assert_int_equal(access(fresh, F_OK), -1);
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "--open-families"))
        fail_msg("the refusal does not say why:\n%s", log);
    free(log);
    snprintf(args, sizeof args, "--jsonl '%s' --split train --facts templates --templates '%s' --word-keys 0.5 -o '%s'",
             in, templates_dir(), fresh);
    assert_int_equal(run_cli(args), 1);
    assert_int_equal(access(fresh, F_OK), -1);
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "word keys (--word-keys) are keys of open families"))
        fail_msg("the refusal does not say why:\n%s", log);
    free(log);
    snprintf(args, sizeof args, "--jsonl '%s' --split train --facts templates --templates '%s' --shared-heads 1 -o '%s'",
             in, templates_dir(), fresh);
    assert_int_equal(run_cli(args), 1);
    assert_int_equal(access(fresh, F_OK), -1);
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "shared heads (--shared-heads) are keys of open families"))
        fail_msg("the refusal does not say why:\n%s", log);
    free(log);
    snprintf(args, sizeof args, "--jsonl '%s' --split train --facts templates --templates '%s' --composed-frames 1 -o '%s'",
             in, templates_dir(), fresh);
    assert_int_equal(run_cli(args), 1);
    assert_int_equal(access(fresh, F_OK), -1);
    assert_int_equal(mn_file_read_all(tmp_path("cli.log"), &log, &log_len), MN_OK);
    if (!strstr(log, "composed frames (--composed-frames) are frames of open families"))
        fail_msg("the refusal does not say why:\n%s", log);
    free(log);
    snprintf(args, sizeof args, "--synthetic 2 --templates '%s' --composed-frames 1.5 -o '%s'", templates_dir(), fresh);
    assert_int_equal(run_cli(args), 2);
    snprintf(args, sizeof args, "--synthetic 2 --templates '%s' --shared-heads 1.5 -o '%s'", templates_dir(), fresh);
    assert_int_equal(run_cli(args), 2);
    snprintf(args, sizeof args, "--synthetic 2 --templates '%s' --word-families 1.5 -o '%s'", templates_dir(), fresh);
    assert_int_equal(run_cli(args), 2);
    snprintf(args, sizeof args, "--synthetic 2 --templates '%s' --word-keys 1.5 -o '%s'", templates_dir(), fresh);
    assert_int_equal(run_cli(args), 2);
    mn_dialogue_list_free(&dialogues);
    free_list(heldout, n_heldout);
}

/* Without --templates, mnemo episodes finds its templates from any working directory (the
 * source tree's data/probes for a build-tree binary, share/mnemo/probes when installed), and
 * --help names the folder it will use. */
static void test_cli_default_templates_from_any_directory(void **state) {
    (void)state;
    const char *bin = getenv("MNEMO_BIN");
    if (!bin)
        skip();
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' episodes --synthetic 2 --turns 20 -o elsewhere.jsonl > cli.log 2>&1",
             tmp_dir, bin);
    int rc = system(cmd);
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
        snprintf(cmd, sizeof cmd, "cat '%s'", tmp_path("cli.log"));
        assert_int_equal(system(cmd), 0);
        fail_msg("mnemo episodes from %s exited %d", tmp_dir, WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    }
    mn_dialogue_list eps = {0};
    mn_read_stats rs = {0};
    assert_int_equal(mn_jsonl_read(tmp_path("elsewhere.jsonl"), 1, stderr, &eps, &rs), MN_OK);
    assert_int_equal(eps.count, 2);
    mn_dialogue_list_free(&eps);
    snprintf(cmd, sizeof cmd, "cd / && '%s' episodes --help > '%s'", bin, tmp_path("help.txt"));
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(tmp_path("help.txt"), "r");
    assert_non_null(f);
    char help[8192];
    size_t n = fread(help, 1, sizeof help - 1, f);
    help[n] = '\0';
    fclose(f);
    char real[4096];
    assert_non_null(realpath(templates_dir(), real));
    if (!strstr(help, real))
        fail_msg("--help does not name %s:\n%s", real, help);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mnemo_probes_XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_episodes_sessions_and_T),
        cmocka_unit_test(test_episodes_deterministic),
        cmocka_unit_test(test_template_probes_valid),
        cmocka_unit_test(test_open_values),
        cmocka_unit_test(test_exact_long_distance),
        cmocka_unit_test(test_probes_deterministic),
        cmocka_unit_test(test_updates),
        cmocka_unit_test(test_interference),
        cmocka_unit_test(test_template_splits_disjoint),
        cmocka_unit_test(test_template_errors),
        cmocka_unit_test(test_family_split),
        cmocka_unit_test(test_open_families),
        cmocka_unit_test(test_open_family_probes),
        cmocka_unit_test(test_span_families),
        cmocka_unit_test(test_word_families),
        cmocka_unit_test(test_word_keys),
        cmocka_unit_test(test_shared_heads),
        cmocka_unit_test(test_composed_frames),
        cmocka_unit_test(test_composed_grammar_errors),
        cmocka_unit_test(test_frame_rewrites),
        cmocka_unit_test(test_embed_sentence),
        cmocka_unit_test(test_embed_and_variety_probes),
        cmocka_unit_test(test_frame_noise),
        cmocka_unit_test(test_variety_avoids_heldout_phrasings),
        cmocka_unit_test(test_open_frames_errors),
        cmocka_unit_test(test_askers),
        cmocka_unit_test(test_alive),
        cmocka_unit_test(test_alive_same_kind),
        cmocka_unit_test(test_distances_parse),
        cmocka_unit_test(test_persona_split_fixture),
        cmocka_unit_test(test_persona_split_msc),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_cli_span_families),
        cmocka_unit_test(test_cli_word_families),
        cmocka_unit_test(test_cli_default_templates_from_any_directory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
