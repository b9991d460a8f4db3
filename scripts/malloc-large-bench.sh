#!/usr/bin/env bash
# malloc-large-style work (scripts/malloc-large.c: blocks of 1 to 32 MiB,
# one byte written per page, up to 5 live) under LD_PRELOAD with segalloc,
# glibc (no preload) and, when installed from the distribution's packages,
# mimalloc, jemalloc and tcmalloc:
#   apt-get install libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4
# Runs are interleaved; prints the median wall time, peak RSS and minor page
# faults of each allocator (from /usr/bin/time) as a Markdown table.
#
# Usage: scripts/malloc-large-bench.sh [REPS] [ITERS LIVE MIN_MIB MAX_MIB]
#        (defaults: 5, and 2000 5 1 32)
# Env:   SEGALLOC_SO=path  use this libsegalloc.so instead of building it
set -euo pipefail
REPS=${1:-5}
shift || true
ARGS=${*:-2000 5 1 32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ -z "${SEGALLOC_SO:-}" ]]; then
  (cd "$ROOT" && cargo build --release --features override --lib -q)
  SEGALLOC_SO="${CARGO_TARGET_DIR:-$ROOT/target}/release/libsegalloc.so"
fi
[[ -f "$SEGALLOC_SO" ]] || { echo "no $SEGALLOC_SO" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/malloc-large.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cc -O2 -o "$WORK/malloc-large" "$ROOT/scripts/malloc-large.c"

MULTI=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
first() { for f in "$@"; do [[ -f "$f" ]] && { echo "$f"; return; }; done; echo ""; }
MI=$(first "$MULTI"/libmimalloc.so.2* "$MULTI/libmimalloc.so")
JE=$(first "$MULTI/libjemalloc.so.2")
TC=$(first "$MULTI/libtcmalloc_minimal.so.4")

exec python3 - "$REPS" "$WORK/malloc-large" "$ARGS" "$SEGALLOC_SO" "$MI" "$JE" "$TC" <<'PY'
import os, statistics, subprocess, sys

reps, exe, args, seg, mi, je, tc = sys.argv[1:8]
allocs = [("glibc", ""), ("segalloc", seg)] + [
    (n, p) for n, p in [("mimalloc", mi), ("jemalloc", je), ("tcmalloc", tc)] if p]
runs = {n: [] for n, _ in allocs}
sums = set()
for _ in range(int(reps)):
    for name, so in allocs:
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if so:
            env["LD_PRELOAD"] = so
        out = subprocess.run(["/usr/bin/time", "-f", "%e %M %R", exe] + args.split(),
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{name} failed:\n{out.stdout}\n{out.stderr}")
        sums.add(out.stdout.split()[1])
        t, rss, flt = out.stderr.strip().splitlines()[-1].split()
        runs[name].append((float(t), int(rss) / 1024, int(flt)))
if len(sums) != 1:
    sys.exit(f"checksums differ: {sums}")
print(f"malloc-large {args}, {reps} interleaved runs, medians")
print("| allocator | time | peak RSS | minor faults |")
print("|---|---:|---:|---:|")
for name, _ in allocs:
    r = runs[name]
    med = lambda i: statistics.median(x[i] for x in r)
    print(f"| {name} | {med(0):.2f} s | {med(1):.1f} MiB | {med(2) / 1e6:.2f} M |")
PY
