#!/usr/bin/env bash
# Regenerates tests/fixtures/python/tiny_chat.h5: a tiny checkpoint with mnemo's own tokenizer
# (special tokens, so turns render as in training) for the Python tests, trained 3 steps on
# tests/fixtures/python/dialogues.jsonl. Its numbers do not matter; the tests compare the
# binding against the C library on it, never against stored values.
#   tests/python/make_fixture.sh path/to/mnemo
set -euo pipefail
mnemo=${1:?usage: make_fixture.sh path/to/mnemo}
cd "$(dirname "$0")/../fixtures/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$mnemo" tokenizer --train --jsonl dialogues.jsonl --vocab-size 320 -o "$tmp/tok.h5"
"$mnemo" shard --tokenizer "$tmp/tok.h5" --jsonl dialogues.jsonl -o "$tmp/train.shard"
"$mnemo" train --task shards --train-data "$tmp/train.shard" --tokenizer "$tmp/tok.h5" --vocab-size 320 \
    --d-model 16 --n-heads 2 --n-layers 1 --n-comp-layers 1 --n-slots 2 --max-turn-tokens 24 --steps 3 \
    --batch 2 --turns 2 --bptt 2 --eval-interval 0 --threads 1 --device cpu --seed 3 --run-dir "$tmp/run"
cp "$tmp/run/ckpt-00000003.h5" tiny_chat.h5
