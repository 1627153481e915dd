/* mnemo tokenizer: train a byte-level BPE on canonical JSONL, encode/decode text with a saved
 * or a GPT-2 tokenizer, convert GPT-2 files, and time encoding (docs/tokens.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "core/atomic_file.h"
#include "core/clock.h"
#include "text/bpe_jsonl.h"
#include "text/text_util.h" /* mn_file_read_all */

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo tokenizer --train --jsonl A.jsonl [--jsonl B.jsonl ...] [--vocab-size N] -o TOK.h5\n"
            "       mnemo tokenizer --encode TOKENIZER (--text TEXT | --file F) [--ids-out F] [--repeat R]\n"
            "       mnemo tokenizer --decode TOKENIZER --ids \"1 2 3\"\n"
            "       mnemo tokenizer --info TOKENIZER\n"
            "       mnemo tokenizer --convert --gpt2-vocab vocab.json --gpt2-merges merges.txt -o TOK.h5\n"
            "Byte-level BPE with GPT-2 pre-tokenization and the special tokens <|pad|> <|turn|>\n"
            "<|speaker_a|> <|speaker_b|> <|eot|> <|session|> (docs/tokens.md).\n"
            "\n"
            "  --train               learn merges from the turn texts, probe questions and answers\n"
            "                        of the JSONL files (use the training split only)\n"
            "  --jsonl F             canonical dialogue JSONL (repeatable)\n"
            "  --vocab-size N        262..%d (default %d); fewer if the text runs out of pairs\n"
            "  --strict              a bad JSONL line is fatal instead of skipped\n"
            "  --skip-bad            use the good lines of a file even when more than half are bad\n"
            "  -o, --output F        HDF5 file to write (atomically); not written, exit 1, when a\n"
            "                        file yields no dialogue, has more than half its lines bad\n"
            "                        (without --skip-bad), or the text gives no merge\n"
            "  TOKENIZER is --tokenizer TOK.h5, or --gpt2-vocab vocab.json --gpt2-merges merges.txt\n"
            "  --encode              print the ids of --text, or of the bytes of --file\n"
            "  --ids-out F           write the ids as little-endian int32 instead of printing them\n"
            "                        (atomically: a failed write leaves any old F untouched)\n"
            "  --repeat R            encode R times and print MB/s (first pass, with a cold cache,\n"
            "                        and the best pass)\n"
            "  --decode              print the bytes of --ids\n"
            "  --info                print kind, vocabulary size, merges and hash\n"
            "  --help                this text\n",
            MN_TOK_MAX_VOCAB, MN_TOK_DEFAULT_VOCAB);
}

static int fail(const char *what) { return cli_fail("tokenizer", what); }

static int do_train(const char **jsonl, int n_jsonl, int vocab_size, int strict, int skip_bad, const char *output) {
    mn_bpe_counts *counts;
    if (mn_bpe_counts_create(&counts) != MN_OK)
        return fail(NULL);
    double t0 = mn_clock_s();
    int64_t dialogues = 0, turns = 0;
    for (int i = 0; i < n_jsonl; i++) {
        mn_bpe_jsonl_stats js;
        if (mn_bpe_counts_add_jsonl(counts, jsonl[i], strict, skip_bad, stderr, &js) != MN_OK) {
            mn_bpe_counts_free(counts);
            return fail(NULL);
        }
        dialogues += js.dialogues;
        turns += js.turns;
        if (js.bad_lines)
            fprintf(stderr, "mnemo tokenizer: %s: %lld bad lines skipped\n", jsonl[i], (long long)js.bad_lines);
    }
    double t1 = mn_clock_s();
    mn_tokenizer *tok;
    mn_status st = mn_tokenizer_train(counts, vocab_size, &tok);
    double t2 = mn_clock_s();
    printf("read %lld dialogues, %lld turns: %lld pre-tokens, %lld distinct (%.2f s)\n",
           (long long)dialogues, (long long)turns, (long long)mn_bpe_counts_total(counts),
           (long long)mn_bpe_counts_distinct(counts), t1 - t0);
    mn_bpe_counts_free(counts);
    if (st != MN_OK)
        return fail("training");
    printf("trained %d merges, vocabulary %d (%.2f s), hash %016llx\n", mn_tokenizer_n_merges(tok),
           mn_tokenizer_vocab_size(tok), t2 - t1, (unsigned long long)mn_tokenizer_hash(tok));
    if (mn_tokenizer_n_merges(tok) == 0 && vocab_size > MN_TOK_MERGE_BASE) {
        fprintf(stderr, "mnemo tokenizer: learned no merge: no pre-token of the text has two bytes; %s not "
                        "written\n", output);
        mn_tokenizer_free(tok);
        return 1;
    }
    st = mn_tokenizer_save_file(tok, output);
    mn_tokenizer_free(tok);
    if (st != MN_OK)
        return fail(NULL);
    printf("wrote %s\n", output);
    return 0;
}

static int load_tokenizer(const char *path, const char *vocab, const char *merges,
                          mn_tokenizer **tok) {
    if (path && (vocab || merges)) {
        fprintf(stderr, "mnemo tokenizer: give --tokenizer or --gpt2-vocab/--gpt2-merges, not both\n");
        return 2;
    }
    if (path)
        return mn_tokenizer_load_file(path, tok) == MN_OK ? 0 : fail(NULL);
    if (vocab && merges)
        return mn_tokenizer_load_gpt2(vocab, merges, tok) == MN_OK ? 0 : fail(NULL);
    fprintf(stderr, "mnemo tokenizer: needs --tokenizer, or --gpt2-vocab and --gpt2-merges\n");
    return 2;
}

static int do_encode(mn_tokenizer *tok, const char *text, const char *file, const char *ids_out,
                     int repeat) {
    char *buf = NULL;
    size_t len = 0;
    if (text) {
        len = strlen(text);
    } else if (file) {
        if (mn_file_read_all(file, &buf, &len) != MN_OK)
            return fail(NULL);
        text = buf;
    } else {
        fprintf(stderr, "mnemo tokenizer: --encode needs --text or --file\n");
        return 2;
    }
    mn_ids ids = {0};
    double first = 0, best = 1e30;
    int rc = 0;
    for (int r = 0; r < (repeat > 0 ? repeat : 1); r++) {
        ids.count = 0;
        double t0 = mn_clock_s();
        if (mn_tokenizer_encode(tok, text, len, &ids) != MN_OK) {
            rc = fail("encode");
            break;
        }
        double dt = mn_clock_s() - t0;
        if (r == 0)
            first = dt;
        if (dt < best)
            best = dt;
    }
    if (rc == 0 && repeat > 0)
        printf("mnemo: %.2f MB, %lld tokens: first pass %.1f MB/s, best of %d %.1f MB/s\n",
               (double)len / 1e6, (long long)ids.count, (double)len / 1e6 / first, repeat,
               (double)len / 1e6 / best);
    if (rc == 0 && ids_out) {
        /* written like every other output: temp file, fsync, rename (never a partial file) */
        if (mn_atomic_write_bytes(ids_out, ids.ids, (size_t)ids.count * sizeof(int32_t)) != MN_OK)
            rc = fail(NULL);
    } else if (rc == 0 && repeat <= 0) {
        for (int64_t i = 0; i < ids.count; i++)
            printf(i ? " %d" : "%d", ids.ids[i]);
        printf("\n");
    }
    mn_ids_free(&ids);
    free(buf);
    return rc;
}

static int do_decode(const mn_tokenizer *tok, const char *spec) {
    if (!spec) {
        fprintf(stderr, "mnemo tokenizer: --decode needs --ids\n");
        return 2;
    }
    /* ids separated by spaces, commas, tabs or newlines */
    mn_ids ids = {0};
    for (const char *p = spec; *p;) {
        size_t n = strcspn(p, " ,\t\n");
        if (n) {
            char *id = strndup(p, n);
            int v = 0, good = id && cli_int("tokenizer", "--ids", id, 0, INT32_MAX, &v);
            free(id);
            if (!good) {
                mn_ids_free(&ids);
                return 2;
            }
            if (mn_ids_push(&ids, v) != MN_OK) {
                mn_ids_free(&ids);
                return fail("--ids");
            }
        }
        p += n + (p[n] != '\0');
    }
    char *out;
    size_t n;
    mn_status st = mn_tokenizer_decode(tok, ids.ids, ids.count, &out, &n);
    mn_ids_free(&ids);
    if (st != MN_OK)
        return fail(NULL);
    fwrite(out, 1, n, stdout);
    printf("\n");
    free(out);
    return 0;
}

static void print_info(const mn_tokenizer *tok) {
    printf("kind %s\nvocab_size %d\nmerges %d\nhash %016llx\n", mn_tokenizer_kind(tok),
           mn_tokenizer_vocab_size(tok), mn_tokenizer_n_merges(tok),
           (unsigned long long)mn_tokenizer_hash(tok));
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
        printf("%-14s %d\n", mn_special_text((mn_special)i), mn_tokenizer_special(tok, (mn_special)i));
}

int cmd_tokenizer(int argc, char **argv) {
    enum { A_NONE, A_TRAIN, A_ENCODE, A_DECODE, A_INFO, A_CONVERT } action = A_NONE;
    const char *jsonl[64];
    int n_jsonl = 0, vocab_size = MN_TOK_DEFAULT_VOCAB, strict = 0, skip_bad = 0, repeat = 0, n_actions = 0;
    const char *output = NULL, *tok_path = NULL, *vocab = NULL, *merges = NULL, *text = NULL,
               *file = NULL, *ids_out = NULL, *ids = NULL;
    static const struct option options[] = {
        {"train", no_argument, 0, 't'},        {"encode", no_argument, 0, 'e'},
        {"decode", no_argument, 0, 'd'},       {"info", no_argument, 0, 'I'},
        {"convert", no_argument, 0, 'c'},      {"jsonl", required_argument, 0, 'j'},
        {"vocab-size", required_argument, 0, 'v'}, {"strict", no_argument, 0, 'S'},
        {"skip-bad", no_argument, 0, 'B'},
        {"output", required_argument, 0, 'o'}, {"tokenizer", required_argument, 0, 'k'},
        {"gpt2-vocab", required_argument, 0, 'V'}, {"gpt2-merges", required_argument, 0, 'M'},
        {"text", required_argument, 0, 'x'},   {"file", required_argument, 0, 'f'},
        {"ids-out", required_argument, 0, 'O'}, {"ids", required_argument, 0, 'i'},
        {"repeat", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":o:", options, NULL)) != -1) {
        switch (c) {
        case 't': action = A_TRAIN; n_actions++; break;
        case 'e': action = A_ENCODE; n_actions++; break;
        case 'd': action = A_DECODE; n_actions++; break;
        case 'I': action = A_INFO; n_actions++; break;
        case 'c': action = A_CONVERT; n_actions++; break;
        case 'j':
            if (n_jsonl == (int)(sizeof jsonl / sizeof jsonl[0])) {
                fprintf(stderr, "mnemo tokenizer: at most 64 --jsonl files\n");
                return 2;
            }
            jsonl[n_jsonl++] = optarg;
            break;
        case 'v':
            if (!cli_int("tokenizer", "--vocab-size", optarg, MN_TOK_MERGE_BASE, MN_TOK_MAX_VOCAB, &vocab_size))
                return 2;
            break;
        case 'r':
            if (!cli_int("tokenizer", "--repeat", optarg, 1, 1000000, &repeat))
                return 2;
            break;
        case 'S': strict = 1; break;
        case 'B': skip_bad = 1; break;
        case 'o': output = optarg; break;
        case 'k': tok_path = optarg; break;
        case 'V': vocab = optarg; break;
        case 'M': merges = optarg; break;
        case 'x': text = optarg; break;
        case 'f': file = optarg; break;
        case 'O': ids_out = optarg; break;
        case 'i': ids = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("tokenizer", c, argv, usage);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo tokenizer: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (n_actions != 1) {
        fprintf(stderr, "mnemo tokenizer: give exactly one of --train, --encode, --decode, "
                        "--info, --convert\n");
        usage(stderr);
        return 2;
    }
    if (action == A_TRAIN) {
        if (!n_jsonl || !output) {
            fprintf(stderr, "mnemo tokenizer: --train needs --jsonl and -o\n");
            return 2;
        }
        if (strict && skip_bad) {
            fprintf(stderr, "mnemo tokenizer: --strict and --skip-bad contradict each other\n");
            return 2;
        }
        return do_train(jsonl, n_jsonl, vocab_size, strict, skip_bad, output);
    }
    if (action == A_CONVERT && !output) {
        fprintf(stderr, "mnemo tokenizer: --convert needs -o\n");
        return 2;
    }
    mn_tokenizer *tok = NULL;
    int rc = load_tokenizer(tok_path, vocab, merges, &tok);
    if (rc)
        return rc;
    switch (action) {
    case A_ENCODE: rc = do_encode(tok, text, file, ids_out, repeat); break;
    case A_DECODE: rc = do_decode(tok, ids); break;
    case A_INFO: print_info(tok); break;
    case A_CONVERT:
        rc = mn_tokenizer_save_file(tok, output) == MN_OK ? 0 : fail(NULL);
        if (!rc)
            printf("wrote %s (hash %016llx)\n", output, (unsigned long long)mn_tokenizer_hash(tok));
        break;
    default: break;
    }
    mn_tokenizer_free(tok);
    return rc;
}
