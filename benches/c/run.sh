#!/usr/bin/env bash
# C allocator benchmarks: runs each program in this folder under LD_PRELOAD
# with segalloc, glibc (nothing preloaded), and Debian's mimalloc, jemalloc and
# tcmalloc, interleaved, and prints a Markdown table of medians relative to
# mimalloc. See benches/c/README.md.
#
# Usage: bash benches/c/run.sh [options]
#   --reps N        repetitions (default 5)
#   --quick         tiny parameters and 1 repetition (CI smoke test, < 1 min)
#   --only LIST     comma list of programs (larson,xmalloc,mstress,churn,
#                   churn-mt,bignum,large,leak,threadchurn,realloc)
#   --alloc LIST    comma list among segalloc,glibc,mimalloc,jemalloc,tcmalloc
#   --out FILE.md   also write the table to FILE.md
#   --svg FILE.svg  also write a bar chart of the ratios
# Env:   SEGALLOC_SO=path  use this libsegalloc.so instead of building it (the
#        build is `cargo build --release --features override --lib`, honouring
#        CARGO_TARGET_DIR; the library is target/release/libsegalloc.so)
#        CC=compiler       C compiler (default cc)
# Missing Debian libraries are installed with apt-get when running as root;
# an allocator that still cannot be had is skipped with a line saying so.
# Exits non-zero if any run failed (crash, non-zero exit, or a checksum that
# differs from glibc's).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

REPS=5 REPS_SET=0 QUICK=0 ONLY="" OUT="" SVG=""
ALLOC="segalloc,glibc,mimalloc,jemalloc,tcmalloc"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --reps) REPS=${2:?--reps needs a number}; REPS_SET=1; shift 2 ;;
    --reps=*) REPS=${1#*=}; REPS_SET=1; shift ;;
    --quick) QUICK=1; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift 2 ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --alloc) ALLOC=${2:?--alloc needs a list}; shift 2 ;;
    --alloc=*) ALLOC=${1#*=}; shift ;;
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --svg) SVG=${2:?--svg needs a file}; shift 2 ;;
    --svg=*) SVG=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --reps needs a positive number" >&2; exit 2; }
if [[ $QUICK == 1 && $REPS_SET == 0 ]]; then REPS=1; fi
# Output paths are taken relative to the caller's directory.
[[ -n "$OUT" && "$OUT" != /* ]] && OUT="$PWD/$OUT"
[[ -n "$SVG" && "$SVG" != /* ]] && SVG="$PWD/$SVG"

want() { [[ ",$ALLOC," == *",$1,"* ]]; }
IFS=, read -r -a asked <<<"$ALLOC"
for a in "${asked[@]}"; do
  case "$a" in segalloc|glibc|mimalloc|jemalloc|tcmalloc) ;;
    *) echo "run.sh: unknown allocator '$a' (segalloc,glibc,mimalloc,jemalloc,tcmalloc)" >&2; exit 2 ;;
  esac
done

note() { printf 'run.sh: %s\n' "$*" >&2; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ "$TARGET" != /* ]] && TARGET="$ROOT/$TARGET"

# --- segalloc ---------------------------------------------------------------
SEG=""
SEG_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
if [[ -n "$SEG_REV" ]] && ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null; then
  SEG_REV="$SEG_REV + uncommitted changes"
fi
if want segalloc; then
  if [[ -n "${SEGALLOC_SO:-}" ]]; then
    SEG=$SEGALLOC_SO
    SEG_REV="given as SEGALLOC_SO"
  else
    note "building segalloc (cargo build --release --features override --lib)"
    (cd "$ROOT" && cargo build --release --features override --lib -q)
    SEG="$TARGET/release/libsegalloc.so"
  fi
  [[ -f "$SEG" ]] || { echo "run.sh: no segalloc library at $SEG" >&2; exit 1; }
  SEG=$(cd "$(dirname "$SEG")" && pwd)/$(basename "$SEG")
fi

# --- Debian's libraries --------------------------------------------------------
MULTI=$(gcc -print-multiarch 2>/dev/null || cc -print-multiarch 2>/dev/null || true)
[[ -n "$MULTI" ]] || MULTI="$(uname -m)-linux-gnu"
LIBDIR=/usr/lib/$MULTI
first_file() { local f; for f in "$@"; do [[ -f "$f" ]] && { echo "$f"; return; }; done; echo ""; }
find_mi() { first_file "$LIBDIR"/libmimalloc.so.2 "$LIBDIR"/libmimalloc.so.2.*; }
find_je() { first_file "$LIBDIR/libjemalloc.so.2"; }
find_tc() { first_file "$LIBDIR/libtcmalloc_minimal.so.4"; }
pkg_of() { case "$1" in mimalloc) echo libmimalloc2.0 ;; jemalloc) echo libjemalloc2 ;; tcmalloc) echo libtcmalloc-minimal4 ;; esac; }
lib_of() { case "$1" in mimalloc) find_mi ;; jemalloc) find_je ;; tcmalloc) find_tc ;; esac; }

missing=()
for a in mimalloc jemalloc tcmalloc; do
  want "$a" && [[ -z "$(lib_of "$a")" ]] && missing+=("$(pkg_of "$a")")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    note "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 \
      || note "apt-get install ${missing[*]} failed"
  else
    note "not root or no apt-get: cannot install ${missing[*]}"
  fi
fi

libs=() skipped=() versions=""
for a in segalloc mimalloc jemalloc tcmalloc glibc; do
  want "$a" || continue
  case "$a" in
    segalloc) libs+=(--lib "segalloc=$SEG") ;;
    glibc) libs+=(--lib "glibc=") ;;
    *)
      lib=$(lib_of "$a")
      if [[ -z "$lib" ]]; then
        msg="skipped $a: $LIBDIR has no library of Debian package $(pkg_of "$a") (apt-get install $(pkg_of "$a"))"
        [[ $a == mimalloc ]] && msg+="; ratios are relative to glibc instead of mimalloc"
        note "$msg"
        skipped+=(--skipped "$msg")
      else
        libs+=(--lib "$a=$lib")
        v=$(dpkg-query -W -f '${Package} ${Version}' "$(pkg_of "$a")" 2>/dev/null || true)
        versions+="$a=$v;"
      fi ;;
  esac
done

# --- the programs -----------------------------------------------------------------
BIN="$TARGET/cbench"
mkdir -p "$BIN"
CC=${CC:-cc}
for src in "$HERE"/*.c; do  # the programs, and measure.c (the launcher)
  "$CC" -O2 -pthread -Wall -Wextra -o "$BIN/$(basename "$src" .c)" "$src" -lm
done

args=(--bin-dir "$BIN" --reps "$REPS" --versions "$versions" --segalloc-rev "$SEG_REV")
[[ $QUICK == 1 ]] && args+=(--quick)
[[ -n "$ONLY" ]] && args+=(--only "$ONLY")
[[ -n "$OUT" ]] && args+=(--out "$OUT")
[[ -n "$SVG" ]] && args+=(--svg "$SVG")
exec python3 "$HERE/bench.py" "${args[@]}" "${libs[@]}" ${skipped[@]+"${skipped[@]}"}
