#!/bin/sh
# scripts/train-recall --quick end to end on the committed Self-Dialogue fixture: the four stages
# run in order, each from the previous one's checkpoint, with the shipped recipe's settings
# (stage 4: the updates shard, lr 1e-3); run again, it trains nothing; with stage 4's directory
# gone, it trains stage 4 alone.
# Usage: test_train_recall.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1
build=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnemo-train-recall-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/data"
ln -s "$src/tests/fixtures/text/self_dialogue" "$tmp/data/self_dialogue_corpus"
run() { MNEMO_BUILD=$build "$src/scripts/train-recall" --quick --data "$tmp/data" --out "$tmp/out" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }; }
fail() { echo "FAIL: $*"; cat "$tmp/log"; exit 1; }

run
for s in s1/ckpt-00000020 s2/ckpt-00000010 s3/ckpt-00000020 s4/ckpt-00000020; do
    [ -f "$tmp/out/$s.h5" ] || fail "no $s.h5"
done
inspect=$("$build/train/mnemo" inspect "$tmp/out/s4/ckpt-00000020.h5")
for want in '"train_data":"'"$tmp"'/out/data/updates.shard"' '"lr":0.001,' '"min_lr":0.0001,' '"reconstruct_delay":2,' '"n_slots":8,'; do
    echo "$inspect" | grep -qF "$want" || fail "stage 4's config lacks $want"
done
echo "$inspect" | grep -q "step 20," || fail "stage 4 did not end at step 20"
grep -q -- "--base $tmp/out/s3/ckpt-00000020.h5" "$tmp/log" || fail "stage 4 did not start from stage 3"

run
[ "$(grep -c ': done (' "$tmp/log")" = 4 ] || fail "a second run trained again"
grep -q "mnemo train" "$tmp/log" && fail "a second run started a stage"

rm -rf "$tmp/out/s4"
run
grep -q "== s4: mnemo train" "$tmp/log" || fail "stage 4 was not trained again"
[ "$(grep -c ': done (' "$tmp/log")" = 3 ] || fail "stages 1-3 were not kept"
[ -f "$tmp/out/s4/ckpt-00000020.h5" ] || fail "no stage 4 checkpoint after the rerun"
echo "ok"
