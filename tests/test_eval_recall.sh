#!/bin/sh
# scripts/eval-recall --quick end to end on Topical-Chat-shaped conversations and MSC-shaped
# personas written here (each split's messages and sentences marked with its name), with the
# untrained tiny chat model: with --split valid every cell is built from the validation split
# alone (filler, held-out and training families' values, personas) and keyed by it; the default
# reads the test split alone and keeps the test keys outside scripts read.
# Usage: test_eval_recall.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1
build=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnemo-eval-recall-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$tmp/data" <<'PY'
import json, os, sys
data = sys.argv[1]
os.makedirs(f"{data}/topical_chat/conversations")
os.makedirs(f"{data}/locomo")
topics = ["football", "music", "movies", "space", "cooking", "books", "travel", "science"]
for split in ["valid", "test"]:
    convs = {}
    for i in range(40):
        content = [{"message": f"{split}split talk {i} line {j}: what do you think about {topics[(i + j) % 8]}?",
                    "agent": f"agent_{1 + j % 2}", "sentiment": "Neutral", "knowledge_source": ["FS1"],
                    "turn_rating": "Good"} for j in range(24)]
        convs[f"t_{split}{i}"] = {"article_url": "https://example.org/a", "config": "A", "content": content}
    for part in ["freq", "rare"]:  # the two files of each split
        json.dump({k + part: v for k, v in convs.items()}, open(f"{data}/topical_chat/conversations/{split}_{part}.json", "w"))
personas = {split: [{"Speaker 1": [f"I keep {split}split bees number {i}.", f"My {split}split sister {i} sings."],
                     "Speaker 2": [f"I drive a {split}split van {i}.", f"I grow {split}split tomatoes {i}."]}
                    for i in range(12)] for split in ["train", "valid", "test"]}
json.dump(personas, open(f"{data}/locomo/msc_personas_all.json", "w"))
PY
run() {
    out=$1
    shift
    MNEMO_BUILD=$build "$src/scripts/eval-recall" --quick --threads 1 --data "$tmp/data" "$@" \
        "$src/tests/fixtures/python/tiny_chat.h5" "$out" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
}
run "$tmp/valid" --split valid
run "$tmp/test"
if MNEMO_BUILD=$build "$src/scripts/eval-recall" --quick --split train "$src/tests/fixtures/python/tiny_chat.h5" \
    "$tmp/train" > "$tmp/train.log" 2>&1; then
    echo "FAIL: --split train was accepted"
    exit 1
fi
grep -q -- "--split is test or valid, not 'train'" "$tmp/train.log" || { cat "$tmp/train.log"; exit 1; }
/usr/bin/python3 - "$src" "$tmp" <<'PY'
import glob, json, os, sys
src, tmp = sys.argv[1], sys.argv[2]
families = [json.load(open(p)) for p in glob.glob(os.path.join(src, "data", "probes", "*.json"))]
families = [f for f in families if "values" in f]
def values(split, held_out):
    """The split's values of the families held out for it (held_out) or of the shared ones."""
    return {v for f in families if ("family_split" in f) == held_out for v in f["values"].get(split, [])}
for split, other in [("valid", "test"), ("test", "valid")]:
    out = os.path.join(tmp, split)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["split"] == split, s["split"]
    for key in ["families", "one_fact"]:
        assert split in s[key] and other not in s[key], (key, list(s[key]))
    assert set(s["families"]) == {split, "train"}, list(s["families"])
    assert set(s["exact_match"]["families"]) == {split}
    assert s["families"][split]["other"]["d1_8"]["n"] > 0 and s["persona"]["self"]["d1_64"]["n"] > 0
    # the filler here says no value, so every binding probe's interfering fact is found
    bind = {k: s["binding"][k]["d1_64"]["n"] for k in ["both", "asked_last", "other_last"]}
    assert bind["asked_last"] > 0 and bind["other_last"] > 0, bind
    assert bind["asked_last"] + bind["other_last"] == bind["both"], bind
    # three of a kind: groups of one family, each fact asked, all before the first question
    assert s["binding"]["three"]["d1_8"]["n"] > 0, s["binding"]["three"]
    assert "binding three of a kind 1-8" in open(os.path.join(out, "summary.txt")).read()
    for line in open(os.path.join(out, "data", "binding-three.jsonl")):
        ps = json.loads(line)["probes"]
        if len(ps) > 1:
            assert len({p["answer"] for p in ps}) == len(ps), ps
            assert max(max(p["evidence"]) for p in ps) < min(p["after"] for p in ps), ps
            assert all(q["answer"] in p["choices"] for p in ps for q in ps), ps
    # four facts alive: each probe counted once by the facts said between its fact and question
    several = s["several"]["other"]
    since = [several.get(f"since{k}", {}).get("d1_64", {}).get("n", 0) for k in range(4)]
    assert since[0] > 0 and since[3] > 0 and sum(since) == several["d1_64"]["n"], (since, several)
    table = open(os.path.join(out, "summary.txt")).read()
    assert f"families {split:5} other 1-8" in table and f"exact match {split} self  1-8" in table, table
    assert "binding  other last 1-64" in table, table
    # by phrasing: validation only; each probe of the held-out rows under the phrasing of its fact
    if split == "valid":
        frames = {x for f in families if f.get("family_split") == "valid" for x in f["fact"]["valid"]}
        rows = s["by_phrasing"]
        assert rows and set(rows) <= frames, set(rows) - frames  # every fact turn matched a phrasing
        for col, total in [("d1_8", s["families"][split]["other"]["d1_8"]["n"] + s["families"][split]["self"]["d1_8"]["n"]),
                           ("three_d1_8", s["binding"]["three"]["d1_8"]["n"])]:
            assert sum(c[col]["n"] for c in rows.values() if col in c) == total, (col, total, rows)
        assert "by the phrasing that stated the asked fact" in table, table
        assert any(frame[:58] in table for frame in rows), table
    else:
        assert "by_phrasing" not in s and "by the phrasing" not in table, table
    held, shared = values(split, True), values(split, False)
    assert held and shared
    for name in os.listdir(os.path.join(out, "data")):
        for line in open(os.path.join(out, "data", name)):
            e = json.loads(line)
            for t in e.get("turns", []):
                assert f"{other}split" not in t["text"] and "trainsplit" not in t["text"], (name, t["text"])
            for p in e.get("probes", []):
                if name.startswith(f"families-{split}-") or name.startswith(("one-fact", "binding-")):
                    assert p["answer"] in held, (name, p["answer"])
                elif name.startswith("families-train-"):
                    assert p["answer"] in shared, (name, p["answer"])
                elif name.startswith("persona-"):
                    assert f"{split}split" in p["answer"], (name, p["answer"])
    filler = open(os.path.join(out, "data", f"topical-chat-{split}.jsonl")).read()
    assert f"{split}split talk" in filler and f"{other}split" not in filler
print("ok")
PY
