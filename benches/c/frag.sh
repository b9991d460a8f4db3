#!/usr/bin/env bash
# The fragmentation benchmark (frag.c, issue 13) under every allocator, one
# process each, printed as a Markdown table of RSS after the random frees,
# after the idle wait + malloc_trim(0), and after the refill. Not part of
# run.sh's suite: one run takes 4-5 s (2 s of it the idle wait), and what it
# measures is resident memory at three points, not time or peak RSS.
#
# Usage: bash benches/c/frag.sh [frag options...]   e.g. -w 0 -n 200000 (CI)
# Exits non-zero if a run fails (a block's contents wrong: exit status 3) or
# prints another checksum than the first allocator's.
# Env:   SEGALLOC_SO=path  libsegalloc.so to use (default: build it with
#        cargo build --release --features override --lib)
#        ALLOC=list        comma list among glibc,mimalloc,jemalloc,tcmalloc,segalloc
#        PSS=1             the table of PSS (taken once every live block has
#                          been read) instead of RSS: meshing maps a physical
#                          page at several addresses, which RSS counts at each
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ "$TARGET" != /* ]] && TARGET="$ROOT/$TARGET"
ALLOC=${ALLOC:-glibc,mimalloc,jemalloc,tcmalloc,segalloc}
KIND=rss; [[ -n "${PSS:-}" ]] && KIND=pss
if [[ -z "${SEGALLOC_SO:-}" && ",$ALLOC," == *",segalloc,"* ]]; then
  (cd "$ROOT" && cargo build --release --features override --lib -q)
  SEGALLOC_SO="$TARGET/release/libsegalloc.so"
fi
mkdir -p "$TARGET/cbench"
${CC:-cc} -O2 -Wall -Wextra -o "$TARGET/cbench/frag" "$HERE/frag.c" -ldl
L=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
echo "| allocator | after the frees | after idle + malloc_trim | after the refill |"
echo "|---|---|---|---|"
IFS=, read -r -a asked <<<"$ALLOC"
status=0 first_sum=""
for a in "${asked[@]}"; do
  case "$a" in
    glibc) lib="" ;;
    mimalloc) lib=$L/libmimalloc.so.2 ;;
    jemalloc) lib=$L/libjemalloc.so.2 ;;
    tcmalloc) lib=$L/libtcmalloc_minimal.so.4 ;;
    segalloc) lib=$SEGALLOC_SO ;;
    *) echo "frag.sh: unknown allocator $a" >&2; exit 2 ;;
  esac
  if [[ -n "$lib" && ! -f "$lib" ]]; then echo "| $a | (no $lib) | | |"; continue; fi
  if ! out=$(env -u LD_PRELOAD LD_PRELOAD="$lib" "$TARGET/cbench/frag" "$@"); then
    echo "| $a | FAILED | | |"; status=1; continue
  fi
  # "rss: STEP  X MiB  (Y MiB over the baseline: Rx live, L MiB)"
  cell() { grep "^$KIND: $1" <<<"$out" | sed -E 's/.* ([0-9.]+) MiB  \(([0-9.]+) MiB over the baseline: ([0-9.]+)x live.*/\1 MiB (\3x)/'; }
  echo "| $a | $(cell 'after the frees') | $(cell 'after [0-9]* ms idle') | $(cell 'after the refill') |"
  sum=$(grep '^checksum' <<<"$out" || true)
  [[ -z "$first_sum" ]] && first_sum=$sum
  if [[ "$sum" != "$first_sum" ]]; then
    echo "frag.sh: $a: $sum differs from the first allocator's $first_sum" >&2; status=1
  fi
done
exit $status
