#!/usr/bin/env python3
"""Oracle fixture for mnemo's GPT-2 tokenizer loader (tests/fixtures/gpt2_tok/).

Run with the pyenv `python3` (3.11) after `pip install tiktoken tokenizers`:
    python3 scripts/reference/gen_tokenizer_fixture.py            # rewrite the committed fixture
    python3 scripts/reference/gen_tokenizer_fixture.py --full-dir DIR   # also write full GPT-2 files

Where the real GPT-2 vocabulary comes from: only PyPI is reachable, and the PyPI package
`openai-whisper` (sdist) bundles `whisper/assets/gpt2.tiktoken`, OpenAI's GPT-2 BPE ranks
(base64 token, rank; rank == GPT-2 token id, 50256 entries, <|endoftext|> = 50256 is special).
This script fetches it with `pip download --no-deps`, rebuilds Hugging Face-style
`vocab.json` + `merges.txt` from the ranks (each multi-byte token's merge is the 2-part BPE of
its bytes using only lower ranks), and checks that HF `tokenizers` (ByteLevel BPE from those
files) and tiktoken (the original ranks, GPT-2 pattern) give identical ids on every case.

The committed fixture is small: it keeps the 256 byte tokens, <|endoftext|>, and only the
merges that encoding the cases applies (the merge-tree closure of the output tokens), with
GPT-2's real ids. BPE with that subset applies exactly the same merges, so the ids are real
GPT-2 ids; HF `tokenizers` is run on the subset files too, as a second oracle.
"""
import argparse
import base64
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
WHISPER = "openai-whisper==20250625"

CASES = [
    "Hello world",
    "Hello, world! How are you today?",
    "I'm sure you'll like it; they've said it's what we'd want. We're ready.",
    "DON'T SHOUT: it'S 'Tis 'sup o'clock rock'n'roll",
    "The year 2023 had 365 days, 12 months and 1,000,000 seconds? 3.14159 42nd",
    "multiple   spaces    here  and\ttabs\t\there",
    "line one\nline two\n\nline four\n\n\n   indented\n",
    "trailing spaces   ",
    "   leading spaces",
    "\n\n\n",
    " ",
    "!!! ??? ... --- *** ((( ))) {{}} [[]] @#$%^&*",
    "email me at someone@example.com or visit https://example.org/path?q=1&r=2",
    "Café résumé naïve façade jalapeño Øresund Ærø straße",
    "Ελληνικά κείμενο και Кириллица текст",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "Emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 ❤️",
    "مرحبا بالعالم، كيف حالك؟ ١٢٣",
    "हिन्दी पाठ और संख्या ४२",
    "Mixed 123abc abc123 ½ ¾ ² ³ Ⅻ ⅷ",
    "Non-breaking\u00a0space and em\u2003space and ideographic\u3000space",
    "tabs\tand\u000bvertical\u000cform feed\rcarriage",
    "  \n  \n word",
    "A: Hi! I just moved to Lisbon.\nB: Oh nice, how do you like it?",
    "<|endoftext|> is text here, not a special token",
    "\u0000 NUL and \u007f DEL and \u0085 NEL",
    "separators\u001c\u001d\u001e\u001f and zero\u200bwidth and soft\u00adhyphen",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "                                                                                x",
    "''''' ' 's 't '\"quoted\" \u2019s curly",
    "",
]


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def fetch_gpt2_ranks(cache_dir):
    path = os.path.join(cache_dir, "gpt2.tiktoken")
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", WHISPER, "-d", tmp], check=True, stdout=subprocess.DEVNULL)
            sdist = glob.glob(os.path.join(tmp, "openai_whisper-*.tar.gz"))[0]
            with tarfile.open(sdist) as tar:
                member = [m for m in tar.getmembers() if m.name.endswith("assets/gpt2.tiktoken")][0]
                data = tar.extractfile(member).read()
        os.makedirs(cache_dir, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def split_token(ranks, token, max_rank):
    """Two-part BPE of token's bytes using ranks below max_rank: the merge that made it."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    assert len(parts) == 2, (token, parts)
    return parts[0], parts[1]


def hf_tokenizer(vocab, merges):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def write_files(out_dir, vocab, merges):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "gpt2_tok"))
    ap.add_argument("--full-dir", help="also write the full GPT-2 vocab.json/merges.txt here")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mnemo-gpt2"))
    args = ap.parse_args()

    ranks = fetch_gpt2_ranks(args.cache)
    enc = tiktoken.Encoding("gpt2-whisper", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})
    b2u = bytes_to_unicode()
    uni = lambda bs: "".join(b2u[b] for b in bs)
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    pair_of = {}
    for token, rank in by_rank:
        if len(token) > 1:
            pair_of[token] = split_token(ranks, token, rank)

    full_vocab = {uni(t): r for t, r in by_rank}
    full_vocab["<|endoftext|>"] = 50256
    full_merges = [(uni(pair_of[t][0]), uni(pair_of[t][1])) for t, r in by_rank if len(t) > 1]
    if args.full_dir:
        write_files(args.full_dir, full_vocab, full_merges)

    # Merge-tree closure of every output token: the merges encoding the cases applies.
    inv = {r: t for t, r in ranks.items()}
    keep = set()
    case_ids = []
    for text in CASES:
        ids = enc.encode_ordinary(text)
        case_ids.append(ids)
        stack = [inv[i] for i in ids]
        while stack:
            t = stack.pop()
            if len(t) > 1 and t not in keep:
                keep.add(t)
                stack.extend(pair_of[t])
    sub_vocab = {uni(t): r for t, r in by_rank if len(t) == 1 or t in keep}
    sub_vocab["<|endoftext|>"] = 50256
    sub_merges = [(uni(pair_of[t][0]), uni(pair_of[t][1])) for t, r in by_rank if t in keep]

    # Both oracles must agree with tiktoken on the full and on the subset vocabulary.
    hf_full = hf_tokenizer(full_vocab, full_merges)
    hf_sub = hf_tokenizer(sub_vocab, sub_merges)
    for text, ids in zip(CASES, case_ids):
        assert hf_full.encode(text).ids == ids, ("full", text)
        assert hf_sub.encode(text).ids == ids, ("subset", text)
        assert enc.decode_bytes(ids) == text.encode("utf-8")

    write_files(args.out, sub_vocab, sub_merges)
    cases = [{"text": t, "ids": ids} for t, ids in zip(CASES, case_ids)]
    source = ("GPT-2 ranks from PyPI " + WHISPER + " whisper/assets/gpt2.tiktoken; ids from "
              "tiktoken " + tiktoken.__version__ + ", checked with HF tokenizers "
              + __import__("tokenizers").__version__)
    # One case a line; texts may hold U+0000 (readers need JSON_ALLOW_NUL).
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        f.write('{"source": ' + json.dumps(source) + ',\n "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")
    print(f"wrote {args.out}: {len(sub_vocab)} tokens, {len(sub_merges)} merges, "
          f"{len(cases)} cases" + (f"; full files in {args.full_dir}" if args.full_dir else ""))


if __name__ == "__main__":
    main()
