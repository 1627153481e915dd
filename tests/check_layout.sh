#!/usr/bin/env bash
# The layering of docs/layout.md, enforced: every `#include "..."` of a .c, .h, .cu or .cuh
# file under the table's folders must resolve to a file, and land in the including file's own
# folder, under an entry of that folder's "may include" column, or on a row of the findings
# table for that file. The rules are read from docs/layout.md itself, so the table and the
# check cannot drift apart. Python files: each C function a binding declares (_declare("mn_..."))
# must be declared in a header its folder may include. Prints every offending include; exits 1 if
# there is one.
#   check_layout.sh SOURCE_DIR
set -euo pipefail
cd "${1:?usage: check_layout.sh SOURCE_DIR}"
table=docs/layout.md
[ -f "$table" ] || { echo "check_layout: no $table" >&2; exit 1; }

declare -A allowed # folder (ending in /) or file -> allowed path prefixes, space-separated
folders=()
paths() { { grep -o '`[^`]*`' || true; } | tr -d '`' | tr '\n' ' '; } # the backquoted paths of stdin
# a row's first cell names a folder (its third cell: may include) or a file (a finding: its
# second cell); the entries are the backquoted paths, "—" is none
while IFS='|' read -r _ first second third _; do
    read -r path _ <<<"$(paths <<<"$first")"
    if [[ $path == */ ]]; then
        folders+=("$path")
        cell=$third
    else
        cell=$second
    fi
    allowed[$path]="${allowed[$path]:-} $(paths <<<"$cell")"
done < <(grep -E '^\| *`[^`]+` *\|' "$table")
[ "${#folders[@]}" -gt 0 ] || { echo "check_layout: no folder rows in $table" >&2; exit 1; }

# the table folder a path lies in: the longest folder row that is a prefix of it
folder_of() {
    local best="" f
    for f in "${folders[@]}"; do
        if [[ $1 == "$f"* && ${#f} -gt ${#best} ]]; then best=$f; fi
    done
    printf '%s' "$best"
}

# Where the compiler finds "name" included from a file in dir: dir, then include/, then src/
# (meson.build's include path); a header generated from name.in in dir counts as dir's, and
# one generated from src/<folder>/name.in (meson writes it to the build's src/) as that folder's.
resolve() {
    local dir=$1 name=$2 p
    for p in "$dir/$name" "include/$name" "src/$name"; do
        if [ -f "$p" ]; then
            realpath -m --relative-to=. "$p"
            return
        fi
    done
    for p in "$dir/$name.in" src/*/"$name.in"; do
        if [ -f "$p" ]; then
            realpath -m --relative-to=. "${p%.in}"
            return
        fi
    done
}

bad=0
roots=()
for f in "${folders[@]}"; do roots+=("${f%%/*}"); done
mapfile -t files < <(find $(printf '%s\n' "${roots[@]}" | sort -u) -type f \
    \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
for file in "${files[@]}"; do
    own=$(folder_of "$file")
    if [ -z "$own" ]; then
        echo "$file: its folder has no row in $table"
        bad=1
        continue
    fi
    while IFS= read -r line; do
        lineno=${line%%:*}
        name=$(sed -E 's/^[^"]*"([^"]+)".*/\1/' <<<"$line")
        target=$(resolve "$(dirname "$file")" "$name")
        if [ -z "$target" ]; then
            echo "$file:$lineno: #include \"$name\" names no file (nor include/$name, src/$name)"
            bad=1
            continue
        fi
        [[ $target == "$own"* ]] && continue
        ok=0
        for entry in ${allowed[$own]} ${allowed[$file]:-}; do
            if [[ $target == "$entry"* ]]; then ok=1; break; fi
        done
        if [ $ok = 0 ]; then
            echo "$file:$lineno: #include \"$name\" ($target): $own may not include $(folder_of "$target") ($table)"
            bad=1
        fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" || true)
done

# Python bindings: a C function declared with _declare("mn_...") counts as an include of the
# header that declares it, which must lie under the folder's "may include" entries.
mapfile -t pyfiles < <(find $(printf '%s\n' "${roots[@]}" | sort -u) -type f -name '*.py' | sort)
for file in "${pyfiles[@]}"; do
    own=$(folder_of "$file")
    [ -n "$own" ] || continue
    headers=()
    for entry in ${allowed[$own]} ${allowed[$file]:-}; do
        [ -e "$entry" ] && mapfile -t -O "${#headers[@]}" headers < <(find "$entry" -name '*.h' | sort)
    done
    while IFS=: read -r lineno name; do
        if [ ${#headers[@]} -eq 0 ] || ! grep -qE "\b$name[[:space:]]*\(" "${headers[@]}"; then
            echo "$file:$lineno: declares $name, which no header under its allowed folders ($(echo ${allowed[$own]})) declares ($table)"
            bad=1
        fi
    done < <(grep -noE '_declare\("mn_[A-Za-z0-9_]+"' "$file" | sed -E 's/^([0-9]+):_declare\("([^"]+)"/\1:\2/')
done
[ $bad = 0 ] && echo "check_layout: ${#files[@]} C files and ${#pyfiles[@]} Python files, every include as $table allows"
exit $bad
