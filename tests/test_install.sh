#!/bin/sh
# `meson install` of this build into a temporary DESTDIR, then examples/session_demo.c built
# against that copy alone with `pkg-config --cflags --libs mnemo` (the shared library) and with
# `pkg-config --static --libs mnemo` (libmnemo.a and its private dependencies), and run; the
# installed `mnemo` imports the tiny GPT-2 fixture so that the demo also runs from a checkpoint
# with a tokenizer. Any step that fails fails the test.
#   test_install.sh MESON BUILD_DIR SOURCE_DIR SANITIZE   (MNEMO_FIXTURES: tests/fixtures)
# SANITIZE is the build's b_sanitize: an instrumented library needs the demo built the same way.
set -eu
meson=$1 build=$2 source=$3 sanitize=$4
fixtures=${MNEMO_FIXTURES:-$source/tests/fixtures}
work=$(mktemp -d "${TMPDIR:-/tmp}/mnemo-install-XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
    echo "test_install: $*" >&2
    exit 1
}
dest=$work/dest

"$meson" install -C "$build" --destdir "$dest" --no-rebuild --quiet || fail "meson install failed"
pcfile=$(find "$dest" -name mnemo.pc)
[ -n "$pcfile" ] || fail "no mnemo.pc was installed"
pcdir=$(dirname "$pcfile")
# the .pc names the real prefix; the copy lives under DESTDIR
prefix=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=prefix mnemo)
pc() { PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$dest$prefix" "$@" mnemo; }
libdir=$(pc --variable=libdir)
includedir=$(pc --variable=includedir)
for f in "$dest$prefix/bin/mnemo" "$includedir/mnemo.h" "$libdir/libmnemo.a" "$libdir/libmnemo.so"; do
    [ -e "$f" ] || fail "not installed: $f"
done

# built from the public header and the installed libraries only (no -I into the source tree)
demo=$source/examples/session_demo.c
cflags="-std=c11 -Wall -Werror"
[ "$sanitize" = none ] || cflags="$cflags -fsanitize=$sanitize"
cc $cflags "$demo" $(pc --cflags --libs) -lm -o "$work/demo_shared" ||
    fail "building the demo against the shared library failed"
static_libs=$(pc --static --libs | sed 's/-lmnemo\b/-l:libmnemo.a/')
cc $cflags "$demo" $(pc --cflags) $static_libs -lm -o "$work/demo_static" ||
    fail "building the demo against libmnemo.a with pkg-config --static failed"
LD_LIBRARY_PATH=$libdir ldd "$work/demo_shared" | grep -q "$libdir/libmnemo.so" ||
    fail "demo_shared does not load the installed libmnemo.so"
! ldd "$work/demo_static" | grep -q libmnemo || fail "demo_static still needs libmnemo.so"

# each runs twice on one store (the second continues the session), then from a checkpoint
"$dest$prefix/bin/mnemo" import-gpt2 --safetensors "$fixtures/gpt2_tiny/model.safetensors" \
    --vocab "$fixtures/gpt2_tiny/vocab.json" --merges "$fixtures/gpt2_tiny/merges.txt" \
    --config "$fixtures/gpt2_tiny/config.json" --slots 4 --max-turn-tokens 60 --comp-layers 1 \
    -o "$work/gpt2.h5" > /dev/null || fail "the installed mnemo import-gpt2 failed"
expect() { # file, text
    grep -qF "$2" "$1" || { cat "$1" >&2; fail "$(basename "$1") lacks '$2'"; }
}
for kind in shared static; do
    run=$work/run_$kind
    mkdir "$run"
    (cd "$run" && LD_LIBRARY_PATH=$libdir "$work/demo_$kind" > first.txt && \
        LD_LIBRARY_PATH=$libdir "$work/demo_$kind" > second.txt) || fail "demo_$kind failed"
    expect "$run/first.txt" "read back: 3 turns, identical to R"
    expect "$run/second.txt" "continuing from its saved state"
    expect "$run/second.txt" "read back: 6 turns, identical to R"
    LD_LIBRARY_PATH=$libdir "$work/demo_$kind" "$work/gpt2.h5" "$run/gpt2-store.h5" > "$run/gpt2.txt" ||
        fail "demo_$kind failed on the imported checkpoint"
    expect "$run/gpt2.txt" "model: V 420, C 32, 2 + 1 layers, k 4 slots"
    expect "$run/gpt2.txt" " p="
done
echo "test_install: installed to $dest$prefix; the demo built and ran against the shared and the static library"
