#!/usr/bin/env bash
# Lists the functions of libsegalloc.so that the C benchmark programs
# (benches/c, small parameters) run but that link/hot-text.ld leaves outside
# the hot section at the start of the text. Each one makes a program map
# another 64 KiB of the library; add it to the script (see its comment for
# the pattern syntax) unless it is rare. Needs valgrind (callgrind), objdump,
# python3 and a C compiler.
#
# Usage: scripts/hot-text.sh
# Env:   SEGALLOC_SO=path  use this libsegalloc.so instead of building it
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${SEGALLOC_SO:-}" ]]; then
  (cd "$ROOT" && cargo build --release --features override --lib -q)
  SEGALLOC_SO="${CARGO_TARGET_DIR:-$ROOT/target}/release/libsegalloc.so"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for p in churn bignum xmalloc mstress larson threadchurn realloc large leak; do
  cc -O2 -pthread -o "$TMP/$p" "$ROOT/benches/c/$p.c" -lm
done
run() { # name args...
  local n=$1; shift
  LD_PRELOAD=$SEGALLOC_SO valgrind --tool=callgrind --demangle=no \
    --callgrind-out-file="$TMP/cg.$n" "$TMP/$@" >/dev/null 2>&1
}
run churn churn -n 1000
run churn-mt churn -t 2 -n 1000
run bignum bignum -r 1
run xmalloc xmalloc -n 100000
run mstress mstress -w 4 -o 10000
run larson larson -r 10 -o 2000
run threadchurn threadchurn -w 5
run realloc realloc -c 1
run large large -n 5
run leak leak -n 50
objdump -t "$SEGALLOC_SO" > "$TMP/syms"
objdump -h "$SEGALLOC_SO" > "$TMP/sections"
python3 - "$TMP" "$(basename "$SEGALLOC_SO")" <<'PY'
import glob, re, sys
tmp, lib = sys.argv[1], sys.argv[2]
# The hot part: the first 64 KiB (one fault-around run) from the page where
# the code starts (.init, .fini, .plt or .text, whichever is first), as
# tests/preload_layout.rs checks it. lld merges the script's .text with the
# rest, so a function's place, not its section, tells.
code = []
for line in open(f"{tmp}/sections"):
    f = line.split()
    if len(f) >= 7 and f[0].isdigit() and f[1] in (".init", ".fini", ".plt", ".text"):
        code.append(int(f[3], 16))
start = min(code) & ~0xfff
end = start + (64 << 10)
hot = {}
for line in open(f"{tmp}/syms"):
    left, _, right = line.partition("\t")
    f = left.split()
    r = right.split()
    if len(f) >= 3 and "F" in f[1:-1] and len(r) >= 2:
        addr, size = int(f[0], 16), int(r[0], 16)
        hot[r[-1]] = start <= addr and addr + size <= end
ran = {}
for path in sorted(glob.glob(f"{tmp}/cg.*")):
    prog, names, obj = path.rsplit(".", 1)[1], {}, None
    for line in open(path):
        m = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, ident, name = m.groups()
        if kind.endswith("ob"):
            names.setdefault("ob" + ident, name)
            if kind == "ob":
                obj = names["ob" + ident]
        else:
            names.setdefault("fn" + ident, name)
            if kind == "fn" and obj and obj.endswith(lib):
                ran.setdefault(names["fn" + ident], set()).add(prog)
out = sorted(n for n in ran if not hot.get(n, True))
for n in out:
    print(f"{n}  ({', '.join(sorted(ran[n]))})")
print(f"{len(out)} of the {len(ran)} functions that ran are outside the hot section", file=sys.stderr)
PY
