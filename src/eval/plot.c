/* gnuplot scripts for the eval report's plots (eval.h): each writes its data file with
 * mn_eval_write_*_data and a script that draws it. Every file name and title goes into the
 * script as a single-quoted gnuplot string with its quotes doubled, so a name is always taken
 * literally; running gnuplot is the caller's business. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "eval/eval.h"

/* gnuplot's pngcairo when this gnuplot has it, else its plain png terminal. */
static const char *gp_terminal =
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "  set terminal pngcairo size 960,600 enhanced font 'Sans,11'\n"
    "} else {\n"
    "  set terminal png size 960,600\n"
    "}\n"
    "set termoption noenhanced\n"; /* names like no_memory are literal, not subscripts */

/* s inside a single-quoted gnuplot string: '' stands for ', nothing else is special. */
static void gp_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
}

static void gp_string(FILE *f, const char *s) {
    fputc('\'', f);
    gp_escaped(f, s);
    fputc('\'', f);
}

/* OUT.png -> OUT.<ext> beside it (malloc'd) */
static char *sibling(const char *png, const char *ext) {
    size_t n = strlen(png);
    if (n > 4 && !strcmp(png + n - 4, ".png"))
        n -= 4;
    char *out = malloc(n + strlen(ext) + 2);
    if (out)
        sprintf(out, "%.*s.%s", (int)n, png, ext);
    return out;
}

mn_status mn_eval_check_plot(const char *png) {
    if (!png || !*png)
        return mn_fail(MN_ERR_INVALID_ARG, "plot: no output file named");
    if (strchr(png, '\n'))
        return mn_fail(MN_ERR_INVALID_ARG, "plot: '%s' holds a line break, which a gnuplot script cannot name", png);
    const char *slash = strrchr(png, '/');
    size_t n = !slash ? 1 : slash == png ? 1 : (size_t)(slash - png);
    char *dir = malloc(n + 1);
    if (!dir)
        return mn_fail(MN_ERR_NOMEM, "plot: out of memory");
    snprintf(dir, n + 1, "%.*s", (int)n, slash ? png : ".");
    /* the data, the script and gnuplot's png all go there: one reason for all three */
    struct stat sb;
    int err = 0;
    if (stat(dir, &sb) != 0)
        err = errno;
    else if (!S_ISDIR(sb.st_mode))
        err = ENOTDIR;
    else if (access(dir, W_OK) != 0)
        err = errno;
    mn_status st = err ? mn_fail(MN_ERR_IO, "plot %s: cannot write in %s: %s", png, dir, strerror(err)) : MN_OK;
    free(dir);
    return st;
}

/* The data and script names beside png, the data written by write_data; the script opened
 * with the terminal and output set. */
static mn_status begin(const mn_eval_result *r, const char *png, mn_status (*write_data)(const mn_eval_result *, const char *),
                       char **dat, char **gp, FILE **f) {
    *dat = *gp = NULL;
    *f = NULL;
    MN_TRY(mn_eval_check_plot(png));
    *dat = sibling(png, "dat");
    *gp = sibling(png, "gp");
    if (!*dat || !*gp)
        return mn_fail(MN_ERR_NOMEM, "plot: out of memory");
    MN_TRY(write_data(r, *dat));
    if (!(*f = fopen(*gp, "w")))
        return mn_fail(MN_ERR_IO, "%s: cannot write: %s", *gp, strerror(errno));
    fputs(gp_terminal, *f);
    fputs("set output ", *f);
    gp_string(*f, png);
    fputs("\n", *f);
    return MN_OK;
}

/* Closes the script; on success hands its name to *script, else frees both names. */
static mn_status finish(mn_status st, FILE *f, char *dat, char *gp, char **script) {
    if (f && (ferror(f) | fclose(f)) && st == MN_OK)
        st = mn_fail(MN_ERR_IO, "%s: cannot write", gp);
    free(dat);
    if (st != MN_OK) {
        free(gp);
        return st;
    }
    *script = gp;
    return MN_OK;
}


mn_status mn_eval_write_recall_plot(const mn_eval_result *r, const char *png, const char *title, char **script) {
    char *dat, *gp;
    FILE *f;
    mn_status st = begin(r, png, mn_eval_write_recall_data, &dat, &gp, &f);
    if (st != MN_OK)
        return finish(st, f, dat, gp, script);
    if (title && strchr(title, '\n'))
        title = "(a name with a line break)";
    /* chance: the mean of 1 / choices over the multiple-choice probes */
    double chance = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < r->probes; i++)
        if (r->probe_results[i].n_choices >= 2) {
            chance += 1.0 / r->probe_results[i].n_choices;
            n++;
        }
    fputs("set title 'Recall against distance: ", f);
    gp_escaped(f, title ? title : "");
    fputs("' noenhanced\n", f);
    fputs("set xlabel 'distance from the evidence to the question (turns, log scale)'\n"
          "set ylabel 'multiple-choice accuracy (%)'\n"
          "set logscale x 2\nset yrange [0:100]\nset grid\nset key outside right top\n"
          "set style data linespoints\n"
          "plot ",
          f);
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        char label[64];
        if (vr->spec.mode == MN_EVAL_WINDOW || vr->spec.mode == MN_EVAL_RETRIEVAL || vr->spec.mode == MN_EVAL_SUMMARY)
            snprintf(label, sizeof label, "%s (%d tokens)", mn_eval_mode_names[vr->spec.mode], vr->spec.window);
        else
            snprintf(label, sizeof label, "%s", vr->name);
        fputs(v ? ", " : "", f);
        gp_string(f, dat);
        fprintf(f, " using 1:%d title ", 4 + v);
        gp_string(f, label);
        fprintf(f, " lw 2 pt %d", 5 + 2 * v);
    }
    if (n)
        fprintf(f, ", %g title 'chance' with lines dt 2 lc rgb 'gray40'", 100.0 * chance / (double)n);
    fputs("\n", f);
    return finish(MN_OK, f, dat, gp, script);
}

mn_status mn_eval_write_cost_plot(const mn_eval_result *r, const char *png, char **script) {
    char *dat, *gp;
    FILE *f;
    mn_status st = begin(r, png, mn_eval_write_cost_data, &dat, &gp, &f);
    if (st != MN_OK)
        return finish(st, f, dat, gp, script);
    fprintf(f, "set title 'Cost per turn against turn index (%d threads; state %zu floats)'\n", r->threads,
            r->state_floats);
    fputs("set xlabel 'turn index in the dialogue (log scale)'\n"
          "set ylabel 'wall time per turn (ms)'\n"
          "set logscale x 2\nset yrange [0:*]\nset grid\nset key outside right top\n"
          "set style data linespoints\n"
          "plot ",
          f);
    gp_string(f, dat);
    fputs(" using 1:2 title 'memory update (compressor)' lw 2 pt 7", f);
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        if (!vr->lm_tokens)
            continue;
        char label[64];
        if (vr->spec.mode == MN_EVAL_WINDOW || vr->spec.mode == MN_EVAL_SUMMARY)
            snprintf(label, sizeof label, "decoder, %s %d tokens", mn_eval_mode_names[vr->spec.mode], vr->spec.window);
        else
            snprintf(label, sizeof label, "decoder, %s", vr->name);
        fputs(", ", f);
        gp_string(f, dat);
        fprintf(f, " using 1:%d title ", 3 + v);
        gp_string(f, label);
        fprintf(f, " lw 2 pt %d", 5 + 2 * v);
    }
    /* the baselines' own work per turn, in the columns after the decoder's */
    for (int v = 0, col = 3 + r->n_variants; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        if (vr->spec.mode != MN_EVAL_RETRIEVAL && vr->spec.mode != MN_EVAL_SUMMARY)
            continue;
        char label[64];
        snprintf(label, sizeof label, "%s %d tokens: %s", mn_eval_mode_names[vr->spec.mode], vr->spec.window,
                 vr->spec.mode == MN_EVAL_RETRIEVAL ? "indexing" : "rewrite");
        fputs(", ", f);
        gp_string(f, dat);
        fprintf(f, " using 1:%d title ", col++);
        gp_string(f, label);
        fprintf(f, " lw 2 dt 2 pt %d", 4 + 2 * v);
    }
    fputs("\n", f);
    return finish(MN_OK, f, dat, gp, script);
}
