#!/bin/sh
# scripts/train-recall --quick end to end on the committed Self-Dialogue fixture and a small
# persona file written here: the twelve stages run in order, each from the previous one's
# checkpoint, with the shipped recipe's settings (stage 5: the persona shard, lr 1e-3, the delta
# write rule; stage 6: word families in whole turns; stage 7: a second decoder layer; stage 8: a
# third compressor layer; stages 9 and 10: the same without the reconstruction aid, on two more
# draws; stage 11: a stream of 10-turn windows over another draw and 38-turn episodes; stage 12:
# the same on a draw with keys of the dialogues' words); run again, it trains nothing; with the
# directories of stages 6 to 12 gone, it trains those alone.
# Usage: test_train_recall.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1
build=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnemo-train-recall-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/data"
ln -s "$src/tests/fixtures/text/self_dialogue" "$tmp/data/self_dialogue_corpus"
mkdir "$tmp/data/locomo"
cat > "$tmp/data/locomo/msc_personas_all.json" <<'JSON'
{"train": [{"Speaker 1": ["I grow tomatoes on my balcony.", "I work night shifts at a bakery.", "I have two cats."],
            "Speaker 2": ["I play the cello.", "I am training for a marathon.", "I hate cold weather."]},
           {"Speaker 1": ["I collect old maps.", "My brother lives in Peru.", "I am allergic to peanuts."],
            "Speaker 2": ["I drive a red van.", "I teach chemistry.", "I sing in a choir."]}],
 "valid": [], "test": []}
JSON
run() { MNEMO_BUILD=$build "$src/scripts/train-recall" --quick --data "$tmp/data" --out "$tmp/out" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }; }
fail() { echo "FAIL: $*"; cat "$tmp/log"; exit 1; }
# stage_config STAGE WANT...: STAGE's last checkpoint (read into $inspect) has each WANT in its config
stage_config() {
    stage=$1
    shift
    inspect=$("$build/train/mnemo" inspect "$tmp/out/$stage/ckpt-00000020.h5")
    for want in "$@"; do
        echo "$inspect" | grep -qF "$want" || fail "$stage's config lacks $want"
    done
}

run
for s in s1/ckpt-00000020 s2/ckpt-00000010 s3/ckpt-00000020 s4/ckpt-00000020 s5/ckpt-00000020 s6/ckpt-00000020 s7/ckpt-00000020 s8/ckpt-00000020 s9/ckpt-00000020 s10/ckpt-00000020 s11/ckpt-00000020 s12/ckpt-00000020; do
    [ -f "$tmp/out/$s.h5" ] || fail "no $s.h5"
done
stage_config s5 '"train_data":"'"$tmp"'/out/data/personas.shard"' '"lr":0.001,' '"min_lr":0.0001,' '"reconstruct_delay":2,' '"n_slots":8,' '"write_rule":"delta",'
echo "$inspect" | grep -q "step 20," || fail "stage 5 did not end at step 20"
grep -q -- "--base $tmp/out/s3/ckpt-00000020.h5" "$tmp/log" || fail "stage 4 did not start from stage 3"
grep -q -- "--base $tmp/out/s4/ckpt-00000020.h5" "$tmp/log" || fail "stage 5 did not start from stage 4"
grep -q '"answer": *"I \|"answer":"I ' "$tmp/out/data/ep-personas.jsonl" || fail "stage 5's episodes hold no persona probe"
stage_config s6 '"train_data":"'"$tmp"'/out/data/words.shard"' '"lr":0.001,' '"write_rule":"delta",'
grep -q -- "--base $tmp/out/s5/ckpt-00000020.h5" "$tmp/log" || fail "stage 6 did not start from stage 5"
grep -q "^word families (train): [1-9]" "$tmp/log" || fail "stage 6's episodes have no word families"
"$build/train/mnemo" shard --tokenizer "$tmp/out/data/tok.h5" --check "$tmp/out/data/words.shard" | grep -q "(limit 64)" ||
    fail "stage 6's shard does not keep whole turns (limit 64)"
echo "$inspect" | grep -qF '"n_layers":1,' || fail "stage 6 does not have one decoder layer"
stage_config s7 '"train_data":"'"$tmp"'/out/data/words2.shard"' '"lr":0.001,' '"write_rule":"delta",' '"n_layers":2,'
grep -q -- "--base $tmp/out/s6/ckpt-00000020.h5" "$tmp/log" || fail "stage 7 did not start from stage 6"
cmp -s "$tmp/out/data/ep-words.jsonl" "$tmp/out/data/ep-words2.jsonl" && fail "stage 7's episodes are stage 6's"
echo "$inspect" | grep -qF '"n_comp_layers":2,' || fail "stage 7 does not have two compressor layers"
stage_config s8 '"train_data":"'"$tmp"'/out/data/words3.shard"' '"n_layers":2,' '"n_comp_layers":3,'
grep -q -- "--base $tmp/out/s7/ckpt-00000020.h5" "$tmp/log" || fail "stage 8 did not start from stage 7"
stage_config s9 '"train_data":"'"$tmp"'/out/data/words4.shard"' '"n_layers":2,' '"n_comp_layers":3,' '"reconstruct_weight":0.0,'
grep -q -- "--base $tmp/out/s8/ckpt-00000020.h5" "$tmp/log" || fail "stage 9 did not start from stage 8"
cmp -s "$tmp/out/data/ep-words3.jsonl" "$tmp/out/data/ep-words4.jsonl" && fail "stage 9's episodes are stage 8's"
stage_config s10 '"train_data":"'"$tmp"'/out/data/words5.shard"' '"n_layers":2,' '"n_comp_layers":3,' '"reconstruct_weight":0.0,'
grep -q -- "--base $tmp/out/s9/ckpt-00000020.h5" "$tmp/log" || fail "stage 10 did not start from stage 9"
cmp -s "$tmp/out/data/ep-words4.jsonl" "$tmp/out/data/ep-words5.jsonl" && fail "stage 10's episodes are stage 9's"
stage_config s11 '"train_data":"'"$tmp"'/out/data/stream.shard"' '"n_layers":2,' '"n_comp_layers":3,' '"reconstruct_weight":0.0,' \
    '"turns":10,' '"bptt":10,' '"stream":1,'
grep -q -- "--base $tmp/out/s10/ckpt-00000020.h5" "$tmp/log" || fail "stage 11 did not start from stage 10"
cmp -s "$tmp/out/data/ep-words5.jsonl" "$tmp/out/data/ep-words6.jsonl" && fail "stage 11's episodes are stage 10's"
[ -s "$tmp/out/data/ep-long.jsonl" ] || fail "stage 11 has no long episodes"
grep -q '"after":' "$tmp/out/data/ep-long.jsonl" || fail "stage 11's long episodes ask nothing"
grep -q -- "--turns 12 --distances 9-9" "$tmp/log" || fail "stage 11's long episodes were not asked 9 turns back"
[ "$(cat "$tmp/out/data/ep-words6.jsonl" "$tmp/out/data/ep-long.jsonl" | cksum)" = "$(cksum < "$tmp/out/data/ep-stream.jsonl")" ] ||
    fail "stage 11's episodes are not the sixth draw and the long episodes"
stage_config s12 '"train_data":"'"$tmp"'/out/data/keys-stream.shard"' '"n_layers":2,' '"n_comp_layers":3,' '"reconstruct_weight":0.0,' \
    '"turns":10,' '"bptt":10,' '"stream":1,'
grep -q -- "--base $tmp/out/s11/ckpt-00000020.h5" "$tmp/log" || fail "stage 12 did not start from stage 11"
grep -q "^word keys (train): [1-9]" "$tmp/log" || fail "stage 12's episodes have no word keys"
[ -s "$tmp/out/data/ep-keys-long.jsonl" ] || fail "stage 12 has no long episodes"
[ "$(cat "$tmp/out/data/ep-keys.jsonl" "$tmp/out/data/ep-keys-long.jsonl" | cksum)" = "$(cksum < "$tmp/out/data/ep-keys-stream.jsonl")" ] ||
    fail "stage 12's episodes are not its draw and its long episodes"

run
[ "$(grep -c ': done (' "$tmp/log")" = 12 ] || fail "a second run trained again"
grep -q "mnemo train" "$tmp/log" && fail "a second run started a stage"

rm -rf "$tmp/out/s6" "$tmp/out/s7" "$tmp/out/s8" "$tmp/out/s9" "$tmp/out/s10" "$tmp/out/s11" "$tmp/out/s12"
run
grep -q "== s6: mnemo train" "$tmp/log" || fail "stage 6 was not trained again"
grep -q "== s7: mnemo train" "$tmp/log" || fail "stage 7 was not trained again"
grep -q "== s8: mnemo train" "$tmp/log" || fail "stage 8 was not trained again"
grep -q "== s9: mnemo train" "$tmp/log" || fail "stage 9 was not trained again"
grep -q "== s10: mnemo train" "$tmp/log" || fail "stage 10 was not trained again"
grep -q "== s11: mnemo train" "$tmp/log" || fail "stage 11 was not trained again"
grep -q "== s12: mnemo train" "$tmp/log" || fail "stage 12 was not trained again"
[ "$(grep -c ': done (' "$tmp/log")" = 5 ] || fail "stages 1-5 were not kept"
[ -f "$tmp/out/s12/ckpt-00000020.h5" ] || fail "no stage 12 checkpoint after the rerun"
echo "ok"
