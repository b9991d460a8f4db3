#!/usr/bin/env python3
"""Runs the C benchmark programs under each allocator and reports medians.

Called by run.sh, which builds the programs and the launcher and finds the
libraries; see README.md beside this file. Standard library only.

Each run is one process, started through the launcher (measure.c) with
LD_PRELOAD set to the allocator's library (nothing preloaded for glibc); the
launcher takes the wall time from fork to exit and the peak RSS (ru_maxrss
from wait4). Runs are interleaved: for each repetition, for each program,
every allocator in turn, the order of the allocators rotated by one each
repetition, so drift in the machine's load hits all of them alike.
"""
import argparse
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone

# name, full-run arguments, --quick arguments, one-line description.
# Full-run defaults are tuned so one run takes about 0.3-2 s with glibc on a
# 2-core x86_64 VM; they are the programs' own defaults where those fit.
PROGRAMS = [
    ("larson", [], ["-r", "10", "-o", "2000"], "threads replace each other's blocks (larson)"),
    ("xmalloc", [], ["-n", "200000"], "1 producer, 1 consumer thread (xmalloc-test)"),
    ("mstress", [], ["-w", "4", "-o", "10000"], "mixed sizes across threads, waves (mstress)"),
    ("churn", [], ["-n", "10000"], "fixed-size batches, 1 thread (glibc-simple)"),
    ("churn-mt", ["-t", "2"], ["-t", "2", "-n", "10000"], "fixed-size batches, 2 threads (glibc-thread)"),
    ("bignum", [], ["-r", "2"], "tiny bignum temporaries (cfrac)"),
    ("large", [], ["-n", "20"], "1-32 MiB blocks, touched per page (malloc-large)"),
    ("leak", [], ["-n", "200"], "free most, leak 1 in 50 (mleak)"),
    ("threadchurn", [], ["-w", "10"], "short-lived threads, blocks freed by main"),
    ("realloc", [], ["-c", "1"], "16 B-8 MiB vectors by doubling and back (realloc-large)"),
]
# The binary of each program is the name before any "-" suffix.
def binary_of(name):
    return name.split("-")[0]

ORDER = ["segalloc", "mimalloc", "jemalloc", "tcmalloc", "glibc"]
COLORS = {"segalloc": "#d62728", "mimalloc": "#1f77b4", "jemalloc": "#2ca02c",
          "tcmalloc": "#ff7f0e", "glibc": "#7f7f7f"}


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--svg", default="")
    ap.add_argument("--timeout", type=float, default=0)
    # name=path for each allocator to run (glibc= for none), and notes on
    # the ones that were asked for but could not be had.
    ap.add_argument("--lib", action="append", default=[])
    ap.add_argument("--skipped", action="append", default=[])
    # NAME:VAR=VALUE sets VAR in the environment of allocator NAME's runs
    # only (the others' SEGALLOC_* and similar variables are cleared), so
    # one library can be measured side by side with and without an option.
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--versions", default="")
    ap.add_argument("--segalloc-rev", default="")
    return ap.parse_args()


def run_once(launcher, cmd, lib, timeout, extra_env=None):
    """Runs cmd once through the launcher (measure.c); returns (seconds, peak
    RSS in KiB, exit code, stdout, stderr)."""
    env = dict(os.environ, LC_ALL="C")
    env.pop("LD_PRELOAD", None)
    for k in list(env):
        if k.startswith(("MALLOC_", "MIMALLOC_", "JEMALLOC_", "TCMALLOC_", "SEGALLOC_")):
            del env[k]
    env.update(extra_env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as res:
        p = subprocess.Popen([launcher, res.name, lib] + cmd, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            p.wait(timeout)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the launcher and the program
            p.wait()
            killed = True
        out.seek(0)
        err.seek(0)
        so = out.read().decode(errors="replace")
        se = err.read().decode(errors="replace")
        fields = res.read().split()
        if killed or p.returncode != 0 or len(fields) != 3:
            se += f"\n(killed after {timeout:.0f} s)" if killed else "\n(launcher failed)"
            return float("nan"), 0, 255, so, se
        return float(fields[0]), int(fields[1]), int(fields[2]), so, se


def checksum_of(stdout):
    for line in stdout.splitlines():
        if line.startswith("checksum: "):
            return line.split()[1]
    return None


def fmt_time(s):
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s:.3f} s"


def fmt_mib(kib):
    m = kib / 1024
    return f"{m:.0f} MiB" if m >= 100 else f"{m:.1f} MiB"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine_header(args, allocs, ref, reps, progs):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# C allocator benchmarks under LD_PRELOAD",
        "",
        f"- machine: {model}, {os.cpu_count()} CPUs (nproc {sh(['nproc']) or '?'}); "
        f"load average at start {load}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- glibc: {glibc or '?'}",
    ]
    vers = dict(v.split("=", 1) for v in args.versions.split(";") if "=" in v)
    for name, lib in allocs:
        if name == "glibc":
            continue
        desc = f"{name}: {lib}"
        if name == "segalloc" and args.segalloc_rev:
            desc += f" (commit {args.segalloc_rev})"
        elif vers.get(name):
            desc += f" (package {vers[name]})"
        lines.append(f"- {desc}")
    for s in args.skipped:
        lines.append(f"- {s}")
    lines.append(
        f"- method: {reps} repetition(s); each repetition runs every program under every "
        "allocator, one process per run, the allocators' order rotated by one each "
        "repetition (interleaved, so drift in machine load hits all alike); wall time from "
        "start to exit and peak RSS (ru_maxrss from wait4); each cell is the median over the "
        f"repetitions, with its ratio to {ref}'s median; the last row is the geometric mean "
        "of the ratios over the programs. Every run must exit 0 and print the same checksum "
        "as under glibc (each program checks the content of every block before freeing it); "
        "otherwise its cell says FAILED.")
    if ref != "mimalloc":
        lines.append(f"- note: mimalloc was not run, so the ratios are relative to {ref}.")
    lines.append(f"- programs: {', '.join(p[0] for p in progs)}" +
                 (" (--quick parameters)" if args.quick else ""))
    return lines


def write_svg(path, progs, allocs, ratio, ref, title):
    """Grouped bars of ratio to the reference, log scale, one panel for time
    and one for peak RSS. ratio[(metric, prog, alloc)] = float or None."""
    groups = [p for p in progs] + ["geomean"]
    names = [a for a in allocs]
    bw, gap, left, right = 13, 18, 62, 20
    gw = bw * len(names) + gap
    width = max(left + gw * len(groups) + right, 660)
    ph, top0, legend_h = 230, 48, 26
    height = top0 + legend_h + 2 * (ph + 86) + 10
    lo, hi = math.log2(1 / 8), math.log2(8)

    def esc(s):
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="14" '
         f'font-weight="bold">{esc(title)}</text>',
         f'<text x="{width / 2:.0f}" y="37" text-anchor="middle" fill="#555">'
         f'median over repetitions, relative to {ref} (log scale; below 1.0 is better)</text>']
    # legend
    lx = left
    for a in names:
        o.append(f'<rect x="{lx}" y="{top0}" width="12" height="12" fill="{COLORS.get(a, "#000")}"/>')
        o.append(f'<text x="{lx + 16}" y="{top0 + 10}">{esc(a)}</text>')
        lx += 26 + 7 * len(a)
    for panel, (metric, label) in enumerate([("time", "wall time"), ("rss", "peak RSS")]):
        top = top0 + legend_h + panel * (ph + 86) + 14

        def y(v):
            lv = min(max(math.log2(v), lo), hi)
            return top + ph * (hi - lv) / (hi - lo)

        o.append(f'<text x="{left}" y="{top - 4}" font-weight="bold">{label} / {ref}</text>')
        o.append(f'<rect x="{left}" y="{top}" width="{gw * len(groups)}" height="{ph}" '
                 'fill="none" stroke="#999"/>')
        for t in [0.125, 0.25, 0.5, 1, 2, 4, 8]:
            yy = y(t)
            o.append(f'<line x1="{left}" x2="{left + gw * len(groups)}" y1="{yy:.1f}" '
                     f'y2="{yy:.1f}" stroke="#e4e4e4"/>')
            o.append(f'<text x="{left - 5}" y="{yy + 4:.1f}" text-anchor="end">{t:g}×</text>')
        y1 = y(1)
        for gi, g in enumerate(groups):
            gx = left + gi * gw + gap / 2
            if gi > 0:
                o.append(f'<line x1="{left + gi * gw}" x2="{left + gi * gw}" y1="{top}" '
                         f'y2="{top + ph}" stroke="#f0f0f0"/>')
            for ai, a in enumerate(names):
                x = gx + ai * bw
                v = ratio.get((metric, g, a))
                if v is None or not (v > 0):
                    o.append(f'<text x="{x + bw / 2:.1f}" y="{y1 - 3:.1f}" text-anchor="middle" '
                             f'fill="{COLORS.get(a, "#000")}" font-weight="bold">✗</text>')
                    continue
                yv = y(v)
                ytop, h = min(yv, y1), max(abs(yv - y1), 1)
                o.append(f'<rect x="{x:.1f}" y="{ytop:.1f}" width="{bw - 2}" height="{h:.1f}" '
                         f'fill="{COLORS.get(a, "#000")}"><title>{esc(g)} {esc(a)}: '
                         f'{v:.2f}×</title></rect>')
                if v > 8 or v < 1 / 8:  # clipped: say the value, inside the bar
                    tx, ty = x + bw / 2 + 2, (ytop + 4) if v > 1 else (ytop + h - 4)
                    anchor = "end" if v > 1 else "start"
                    o.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}" '
                             f'font-size="9" fill="white" transform="rotate(-90 {tx:.1f} {ty:.1f})">'
                             f'{v:.2g}×</text>')
            bold = ' font-weight="bold"' if g == "geomean" else ""
            cx = gx + len(names) * bw / 2
            o.append(f'<text x="{cx:.1f}" y="{top + ph + 14}" text-anchor="end" '
                     f'transform="rotate(-35 {cx:.1f} {top + ph + 14})"{bold}>{esc(g)}</text>')
        o.append(f'<line x1="{left}" x2="{left + gw * len(groups)}" y1="{y1:.1f}" y2="{y1:.1f}" '
                 'stroke="black" stroke-width="1.2" stroke-dasharray="5,3"/>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main():
    args = parse_args()
    allocs = []
    for spec in args.lib:
        name, _, lib = spec.partition("=")
        allocs.append((name, lib))
    allocs.sort(key=lambda a: ORDER.index(a[0]) if a[0] in ORDER else len(ORDER))
    extra = {}
    for spec in args.env:
        name, sep, kv = spec.partition(":")
        var, eq, val = kv.partition("=")
        if not sep or not eq or name not in [a for a, _ in allocs]:
            sys.exit(f"--env {spec!r}: needs NAME:VAR=VALUE with NAME one of the --lib names")
        extra.setdefault(name, {})[var] = val
    if not allocs:
        sys.exit("no allocator to run")
    names = [a for a, _ in allocs]
    ref = "mimalloc" if "mimalloc" in names else ("glibc" if "glibc" in names else names[0])
    only = [x for x in args.only.split(",") if x]
    known = [p[0] for p in PROGRAMS]
    for x in only:
        if x not in known:
            sys.exit(f"unknown program {x!r}; known: {', '.join(known)}")
    progs = [p for p in PROGRAMS if not only or p[0] in only]
    reps = args.reps
    timeout = args.timeout or (60 if args.quick else 300)

    launcher = os.path.join(args.bin_dir, "measure")

    def cmd_of(p):
        return [os.path.join(args.bin_dir, binary_of(p[0]))] + (p[2] if args.quick else p[1])

    runs = {}  # (prog, alloc) -> list of (t, rss, rc, checksum, stderr)
    # Reference checksums: glibc's. When glibc is not among the allocators,
    # one unmeasured glibc run per program gives them.
    refsum = {}
    if "glibc" not in names:
        for p in progs:
            _, _, rc, so, _ = run_once(launcher, cmd_of(p), "", timeout)
            refsum[p[0]] = checksum_of(so) if rc == 0 else None
    t_start = time.time()
    for rep in range(reps):
        order = allocs[rep % len(allocs):] + allocs[:rep % len(allocs)]
        print(f"rep {rep + 1}/{reps} ({', '.join(a for a, _ in order)}): ",
              end="", file=sys.stderr, flush=True)
        for p in progs:
            for name, lib in order:
                t, rss, rc, so, se = run_once(launcher, cmd_of(p), lib, timeout,
                                              extra.get(name))
                if "cannot be preloaded" in se:
                    rc = rc or 99  # ld.so ignored the library: not this allocator
                runs.setdefault((p[0], name), []).append((t, rss, rc, checksum_of(so), se))
                print("." if rc == 0 else "F", end="", file=sys.stderr, flush=True)
            print(" ", end="", file=sys.stderr, flush=True)
        print(f"{time.time() - t_start:.0f} s", file=sys.stderr, flush=True)

    if "glibc" in names:
        for p in progs:
            sums = [c for (_, _, rc, c, _) in runs[(p[0], "glibc")] if rc == 0 and c]
            refsum[p[0]] = Counter(sums).most_common(1)[0][0] if sums else None
    # A program whose glibc runs failed: compare with the most common checksum.
    for p in progs:
        if refsum.get(p[0]) is None:
            sums = [c for a in names for (_, _, rc, c, _) in runs[(p[0], a)] if rc == 0 and c]
            refsum[p[0]] = Counter(sums).most_common(1)[0][0] if sums else None

    failures = []
    med = {}  # (prog, alloc) -> (time, rss) or None if failed
    for p in progs:
        for a in names:
            rs = runs[(p[0], a)]
            bad = [r for r in rs if r[2] != 0 or r[3] is None or r[3] != refsum[p[0]]]
            if bad:
                r = bad[0]
                why = (f"exit status {r[2]}" if r[2] != 0 else
                       "no checksum line" if r[3] is None else
                       f"checksum {r[3]} != glibc's {refsum[p[0]]}")
                tail = " | ".join(r[4].strip().splitlines()[-3:])
                failures.append(f"{p[0]} under {a}: {len(bad)} of {len(rs)} runs failed "
                                f"({why}){': ' + tail if tail else ''}")
                med[(p[0], a)] = None
            else:
                med[(p[0], a)] = (statistics.median(r[0] for r in rs),
                                  statistics.median(r[1] for r in rs))

    ratio = {}
    for p in progs:
        base = med[(p[0], ref)]
        for a in names:
            m = med[(p[0], a)]
            if m and base:
                ratio[("time", p[0], a)] = m[0] / base[0]
                ratio[("rss", p[0], a)] = m[1] / base[1]
    incomplete = set()
    for a in names:
        for metric in ("time", "rss"):
            xs = [ratio[(metric, p[0], a)] for p in progs if (metric, p[0], a) in ratio]
            if len(xs) < len(progs):
                incomplete.add(a)
            ratio[(metric, "geomean", a)] = geomean(xs) if xs else None

    lines = machine_header(args, allocs, ref, reps, progs)
    lines += ["", "| program | " + " | ".join(f"{a} time | {a} RSS" for a in names) + " |",
              "|---|" + "---:|---:|" * len(names)]
    for p in progs:
        cells = []
        for a in names:
            m = med[(p[0], a)]
            if m is None:
                cells += ["FAILED", "FAILED"]
            elif (("time", p[0], a)) in ratio:
                cells += [f"{fmt_time(m[0])} ({ratio[('time', p[0], a)]:.2f}×)",
                          f"{fmt_mib(m[1])} ({ratio[('rss', p[0], a)]:.2f}×)"]
            else:  # the reference failed: no ratio
                cells += [fmt_time(m[0]), fmt_mib(m[1])]
        lines.append(f"| {p[0]} | " + " | ".join(cells) + " |")
    gm = []
    for a in names:
        for metric in ("time", "rss"):
            v = ratio.get((metric, "geomean", a))
            star = "*" if a in incomplete else ""
            gm.append(f"**{v:.2f}×{star}**" if v else "n/a")
    lines.append(f"| **geomean vs {ref}** | " + " | ".join(gm) + " |")
    if incomplete:
        lines.append("")
        lines.append("\\* geometric mean over the programs where both this allocator and "
                     f"{ref} succeeded.")
    lines += ["", "| program | what it does | command (other parameters: the program's defaults) |",
              "|---|---|---|"]
    for p in progs:
        cmd = " ".join([binary_of(p[0])] + (p[2] if args.quick else p[1]))
        lines.append(f"| {p[0]} | {p[3]} | `{cmd}` |")
    if failures:
        lines += ["", "FAILED runs:", ""] + [f"- {f}" for f in failures]
    elapsed = time.time() - t_start
    lines += ["", f"Total time of the runs: {elapsed:.0f} s; load average at the end "
              + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + "."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.svg:
        title = f"C benchmarks under LD_PRELOAD, {datetime.now(timezone.utc):%Y-%m-%d}, " \
                f"{reps} rep(s){' (quick)' if args.quick else ''}"
        write_svg(args.svg, [p[0] for p in progs], names, ratio, ref, title)
    if failures:
        print(f"\n{len(failures)} program/allocator pair(s) FAILED", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
