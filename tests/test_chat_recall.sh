#!/bin/sh
# scripts/chat-recall end to end on the committed fixtures (the small Topical-Chat test split,
# the untrained tiny chat model): the table and the JSON are well formed and agree, each
# session's facts and questions are test-split material with a reply to every turn; and the
# hit rule (the value contained after eval's exact-match normalisation) on set cases.
# Usage: test_chat_recall.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1
build=$2
out=$(mktemp -d "${TMPDIR:-/tmp}/mnemo-chat-recall-XXXXXX")
trap 'rm -rf "$out"' EXIT
MNEMO_BUILD=$build "$src/scripts/chat-recall" --data "$src/tests/fixtures/text" --facts 2 --filler 2 \
    "$src/tests/fixtures/python/tiny_chat.h5" "$out" > "$out/stdout.txt"
/usr/bin/python3 - "$src" "$out" <<'PY'
import glob, importlib.machinery, importlib.util, json, os, sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
src, out = sys.argv[1], sys.argv[2]
r = json.load(open(os.path.join(out, "chat-recall.json")))
table = open(os.path.join(out, "chat-recall.txt")).read()
assert open(os.path.join(out, "stdout.txt")).read().startswith(table), "the printed table is the written one"
test_values = {}
for path in glob.glob(os.path.join(src, "data", "probes", "*.json")):
    t = json.load(open(path))
    for v in (t.get("values") or {}).get("test") or []:
        test_values[v] = t["category"]
sessions = r["sessions"]
assert sessions and r["facts"] == len(sessions), r["facts"]
assert r["hits"] == sum(s["hit"] for s in sessions)
assert r["protocol"] == "exchange" and r["filler_turns"] == 2
for fam, row in r["by_family"].items():
    mine = [s for s in sessions if s["family"] == fam]
    assert row["facts"] == len(mine) <= 2 and row["hits"] == sum(s["hit"] for s in mine), fam
    assert len({s["value"] for s in mine}) == len(mine), "distinct values within a family"
    line = [l for l in table.splitlines() if l.split()[:1] == [fam]]
    assert len(line) == 1 and line[0].split()[-2:] == [str(row["facts"]), str(row["hits"])], line
for s in sessions:
    assert test_values.get(s["value"]) == s["family"], s["value"]  # a test-split value of its family
    assert s["value"] in s["fact"] and len(s["filler"]) == 2 and len(s["replies"]) == 4
    assert s["answer"] == s["replies"][-1]
total = [l for l in table.splitlines() if l.startswith("total")]
assert len(total) == 1 and total[0].split()[1:3] == [str(len(sessions)), str(r["hits"])], total
# the hit rule
loader = importlib.machinery.SourceFileLoader("chat_recall", os.path.join(src, "scripts", "chat-recall"))
spec = importlib.util.spec_from_loader("chat_recall", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
assert m.contains("It's Cat Dander, I think!", "cat dander")
assert not m.contains("cat-dander", "cat dander")  # eval deletes the hyphen: one word
assert m.contains("the 12:20 one", "12:20")
assert m.contains("Under the flowerpot.", "under the flowerpot")
assert not m.contains("at 112:20", "12:20")
assert not m.contains("Volvo", "Volvo estate")
print("chat-recall: %d sessions of %d families checked" % (len(sessions), len(r["by_family"])))
PY
