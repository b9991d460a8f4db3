#!/usr/bin/env bash
# Times real programs under LD_PRELOAD with segalloc against the system
# allocator (glibc) and, when installed from the distribution's packages,
# jemalloc, tcmalloc and mimalloc:
#   apt-get install libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
# Runs are interleaved (each repetition runs every workload under every
# allocator in turn) so drift in machine load hits all of them alike. Prints
# one Markdown table: median wall time and median peak RSS per cell.
#
# Usage: scripts/preload-bench.sh [REPS]       (default 5)
# Env:   SEGALLOC_SO=path  use this libsegalloc.so instead of building it
#        (the build is `cargo build --release --features override --lib`,
#        honouring CARGO_TARGET_DIR; the library is target/release/libsegalloc.so)
set -euo pipefail
REPS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ -z "${SEGALLOC_SO:-}" ]]; then
  (cd "$ROOT" && cargo build --release --features override --lib -q)
  SEGALLOC_SO="${CARGO_TARGET_DIR:-$ROOT/target}/release/libsegalloc.so"
fi
[[ -f "$SEGALLOC_SO" ]] || { echo "no $SEGALLOC_SO" >&2; exit 1; }

# The first match of each distribution library, if installed.
find_lib() {
  local f
  for f in "$@"; do
    [[ -f "$f" ]] && { echo "$f"; return; }
  done
  echo ""
}
MULTI=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
JE=$(find_lib "$MULTI/libjemalloc.so.2")
TC=$(find_lib "$MULTI/libtcmalloc_minimal.so.4")
MI=$(find_lib "$MULTI"/libmimalloc.so.2* "$MULTI/libmimalloc.so")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/preload-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

exec python3 - "$REPS" "$WORK" "$ROOT" "$SEGALLOC_SO" "$JE" "$TC" "$MI" <<'PY'
import os, random, shutil, statistics, subprocess, sys, time

reps, work, root, seg, je, tc, mi = sys.argv[1:8]
reps = int(reps)
allocs = [("glibc", "")] + [(n, p) for n, p in
          [("segalloc", seg), ("jemalloc", je), ("tcmalloc", tc), ("mimalloc", mi)] if p]
missing = [n for n, p in [("jemalloc", je), ("tcmalloc", tc), ("mimalloc", mi)] if not p]

# Inputs, made once.
rng = random.Random(42)
words = ["alpha", "beta", "gamma", "delta", "segment", "slice", "page", "heap"]
big = os.path.join(work, "big.txt")
with open(big, "w") as f:
    for i in range(1_500_000):
        f.write(f"{rng.choice(words)}{rng.randrange(10**6)} {rng.randrange(10**9)} {i}\n")
sql = os.path.join(work, "bench.sql")
with open(sql, "w") as f:
    f.write("""CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 400000)
  INSERT INTO t SELECT i, printf('name-%d-%s', i % 9973, hex(i * 7919)), i * 0.5 FROM c;
CREATE INDEX t_name ON t(name);
SELECT name, count(*) n, total(v) FROM t GROUP BY name ORDER BY n DESC, name LIMIT 3;
DELETE FROM t WHERE id % 3 = 0; VACUUM;
SELECT count(*) FROM t;
""")
py = shutil.which("python3") if not os.path.exists("/usr/bin/python3") else "/usr/bin/python3"
workloads = [
    ("python3 dict/str churn, 4 threads", [py, os.path.join(root, "tests/preload/churn.py"), "60000"], None),
    ("sort 1.5M lines", ["sort", "-S", "200M", "--parallel=2", "-k2,2n", big], None),
]
if shutil.which("sqlite3"):
    workloads.append(("sqlite3 400k rows", ["sqlite3", ":memory:"], sql))
else:
    print("note: sqlite3 not installed; skipped", file=sys.stderr)
if shutil.which("git"):
    workloads.append(("git log -p (this repo)", ["git", "-C", root, "log", "-p", "--all"], None))

def run(cmd, stdin, preload):
    env = dict(os.environ, LC_ALL="C", PYTHONHASHSEED="0")
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    fin = open(stdin) if stdin else subprocess.DEVNULL
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=fin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if stdin:
        fin.close()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} under {preload or 'glibc'} failed ({p.returncode}): {err[:500]}")
    return dt, ru.ru_maxrss / 1024.0  # ru_maxrss is in KiB

res = {}
for rep in range(reps):
    for wname, cmd, stdin in workloads:
        order = allocs[rep % len(allocs):] + allocs[:rep % len(allocs)]  # rotate who goes first
        for aname, lib in order:
            res.setdefault((wname, aname), []).append(run(cmd, stdin, lib))

print(f"Median of {reps} interleaved runs: wall time (s) / peak RSS (MiB); "
      f"{os.cpu_count()} CPUs.\n")
print("| workload | " + " | ".join(a for a, _ in allocs) + " |")
print("|---|" + "---|" * len(allocs))
for wname, _, _ in workloads:
    cells = []
    for aname, _ in allocs:
        rs = res[(wname, aname)]
        cells.append(f"{statistics.median(t for t, _ in rs):.3f} / "
                     f"{statistics.median(m for _, m in rs):.1f}")
    print(f"| {wname} | " + " | ".join(cells) + " |")
if missing:
    print("\nNot installed (apt-get install libjemalloc2 libtcmalloc-minimal4 "
          "libmimalloc2.0): " + ", ".join(missing))
PY
