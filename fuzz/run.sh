#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60); fails on any crash.
# Usage: fuzz/run.sh [SECONDS]
# Needs a nightly toolchain (cargo-fuzz builds with -Z flags); without one it
# prints "SKIPPED: no nightly toolchain" and exits 0. Installs cargo-fuzz if
# missing. Findings land in fuzz/artifacts/<target>/ (reproduce with
# `cargo +nightly fuzz run -s none [--features capi] <target> <file>`).
set -euo pipefail

secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! rustup toolchain list | grep -q nightly; then
    echo "SKIPPED: no nightly toolchain"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# `-s none`: segalloc maps its own memory, which AddressSanitizer does not
# track, and the C ABI target must own malloc (ASan would interpose it).
# Leak detection is off for the same reason; the targets check leaks of
# their own blocks through segalloc's statistics.
flags=(-max_total_time="$secs" -timeout=60 -rss_limit_mb=4096 -max_len=4096 -len_control=0 -detect_leaks=0)

status=0
for target in alloc_ops remote_frees capi_ops capi_heap_ops; do
    feat=()
    if [ "$target" = capi_ops ] || [ "$target" = capi_heap_ops ]; then
        feat=(--features capi)
    fi
    echo "== $target for ${secs}s"
    mkdir -p "corpus/$target"
    start=$(date +%s)
    if cargo +nightly fuzz run -O -s none "${feat[@]}" "$target" "corpus/$target" -- "${flags[@]}"; then
        echo "== $target: no crash in $(( $(date +%s) - start ))s"
    else
        echo "== $target: FAILED (see fuzz/artifacts/$target/)"
        status=1
    fi
done
exit $status
